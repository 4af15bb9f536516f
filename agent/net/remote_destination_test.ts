import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { sessionPair } from "../../fixtures/session_pair.ts";
import { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { Priority } from "../wire/frame.ts";
import { MessageKind, MessageReader, MessageWriter, parseJsonBody } from "./message_stream.ts";
import { RemoteDestination } from "./remote_destination.ts";
import { errorReply, SyncOp } from "./sync_messages.ts";
import { bitmapToWire, MAX_SYNC_MESSAGE_BYTES } from "./sync_protocol.ts";

const identity = newVolumeIdentity("vm1", 8 * 65536, 65536);
const ROOT = "cd".repeat(32);
const RESUME = { committedGeneration: 4, merkleRoot: ROOT, cutTimeMs: 77, staged: null };

/**
 * A destination that answers each request with `script(request)` (undefined: no reply), and
 * the adapter opened against it.
 */
async function scripted(script: (request: Record<string, unknown>) => unknown[]) {
  const pair = await sessionPair();
  const requests: Record<string, unknown>[] = [];
  (async () => {
    const stream = await pair.server.acceptStream();
    const reader = new MessageReader(stream!.readable, MAX_SYNC_MESSAGE_BYTES);
    const writer = new MessageWriter(stream!.writable);
    for (let m = await reader.read(); m !== null; m = await reader.read()) {
      if (m.kind !== MessageKind.JSON) continue;
      const request = parseJsonBody(m.body) as Record<string, unknown>;
      requests.push(request);
      const replies = script(request);
      for (const reply of replies) await writer.writeJson(reply);
      // A destination's error outside a request's reply is its last word on the stream.
      if (replies.length > 1 && (replies.at(-1) as { ok: boolean }).ok === false) break;
    }
    await writer.close();
  })().catch(() => {}); // the session is aborted at the end of each test
  const opened = await RemoteDestination.open(pair.client.openStream(Priority.BULK), identity);
  return { ...opened, requests, pair };
}

const honest = (request: Record<string, unknown>): unknown[] => {
  switch (request.op) {
    case SyncOp.OPEN:
    case SyncOp.RESUME:
      return [{ ok: true, resume: RESUME }];
    case SyncOp.FLUSH:
      return [{ ok: true, seq: request.seq, rejected: [] }];
    case SyncOp.COMMIT:
      return [{ ok: true, meta: { committedGeneration: 5, merkleRoot: ROOT, cutTimeMs: 99 } }];
    default:
      return [{ ok: true }];
  }
};

Deno.test("remote destination: replies come back typed; commit reports the destination's state only", async () => {
  const s = await scripted(honest);
  await using _ = s.pair;
  assert.deepEqual(s.resume, { identity, ...RESUME });
  using dirty = new Bitmap(8).setRange(1, 2);
  await s.remote.beginGeneration(5, dirty, 98, true);
  assert.deepEqual(await s.remote.flush(), { rejected: [], resend: [] });
  assert.deepEqual(await s.remote.commit(5, ROOT), {
    committedGeneration: 5,
    merkleRoot: ROOT,
    cutTimeMs: 99,
  });
  const begin = s.requests.find((r) => r.op === SyncOp.BEGIN)!;
  assert.deepEqual(begin, {
    op: SyncOp.BEGIN,
    generation: 5,
    cutTimeMs: 98,
    dirty: bitmapToWire(dirty),
    final: true,
  });
  await s.remote.close();
});

Deno.test("remote destination: a malformed reply is a protocol violation, and so is every later call", async () => {
  const replies: Record<string, unknown[]> = {
    flush: [{ ok: true, seq: 99, rejected: [] }],
    commit: [{ ok: true, meta: { committedGeneration: "5" } }],
    resume: [{ ok: true, resume: { ...RESUME, staged: { generation: 5, received: "%%%" } } }],
    begin: [{ ok: "sure" }],
    // Two blocks of 16 pages: 512 bytes of digests expected, 16 given.
    pages: [{ ok: true, digests: btoa("0123456789abcdef") }],
    pagesNotBase64: [{ ok: true, digests: "%%%" }],
  };
  for (const [op, reply] of Object.entries(replies)) {
    const s = await scripted((r) => r.op === op.replace("NotBase64", "") ? reply : honest(r));
    await using _ = s.pair;
    using dirty = new Bitmap(8);
    const call = {
      flush: () => s.remote.flush(),
      commit: () => s.remote.commit(5, ROOT),
      // Known from the open until something is begun: asked for after a begin.
      resume: async () => {
        await s.remote.beginGeneration(5, dirty, 1, false);
        return await s.remote.resumeInfo();
      },
      begin: () => s.remote.beginGeneration(5, dirty, 1, false),
      pages: () => s.remote.pageDigests([0, 7]),
      pagesNotBase64: () => s.remote.pageDigests([0, 7]),
    }[op]!;
    const err = await assertRejectsCode(call(), ErrorCode.PROTOCOL_VIOLATION);
    assert.ok(err.message.length > 20, err.message);
    if (op !== "resume") {
      // The stream is out of step: nothing more is trusted on it.
      await assertRejectsCode(s.remote.resumeInfo(), ErrorCode.PROTOCOL_VIOLATION);
    }
    await s.remote.close();
  }
});

Deno.test("remote destination: the destination's last word before it ends the stream is why later calls fail", async () => {
  const full = new PresyncError(ErrorCode.NO_SPACE, "disk full while staging", { retryable: true });
  const s = await scripted((r) =>
    r.op === SyncOp.BEGIN ? [{ ok: true }, errorReply(full)] : honest(r)
  );
  await using _ = s.pair;
  using dirty = new Bitmap(8);
  await s.remote.beginGeneration(5, dirty, 1, false);
  const err = await assertRejectsCode(s.remote.flush(), ErrorCode.NO_SPACE);
  assert.equal(err.retryable, true);
  await assertRejectsCode(s.remote.resumeInfo(), ErrorCode.NO_SPACE);
  await assertRejectsCode(s.remote.sendBlock(0, null, new Uint8Array(5)), ErrorCode.NO_SPACE);
  await s.remote.close();
});

Deno.test("remote destination: an error reply to a request rejects that request only", async () => {
  const exported = new PresyncError(ErrorCode.VOLUME_EXPORTED, "exported", { retryable: true });
  let refuse = true;
  const s = await scripted((r) => {
    if (r.op === SyncOp.BEGIN && refuse) {
      refuse = false;
      return [errorReply(exported)];
    }
    return honest(r);
  });
  await using _ = s.pair;
  using dirty = new Bitmap(8);
  await assertRejectsCode(s.remote.beginGeneration(5, dirty, 1, false), ErrorCode.VOLUME_EXPORTED);
  await s.remote.beginGeneration(5, dirty, 1, false);
  assert.deepEqual(await s.remote.flush(), { rejected: [], resend: [] });
  await s.remote.close();
});

Deno.test("remote destination: the resume state is asked for only once something was begun since the open or the last commit", async () => {
  const s = await scripted(honest);
  await using _ = s.pair;
  const resumes = () => s.requests.filter((r) => r.op === SyncOp.RESUME).length;
  assert.deepEqual(await s.remote.resumeInfo(), { identity, ...RESUME }, "known from the open");
  assert.equal(resumes(), 0);
  using dirty = new Bitmap(8).setRange(1, 2);
  await s.remote.beginGeneration(5, dirty, 98, false);
  await s.remote.resumeInfo();
  assert.equal(resumes(), 1, "after a begin, the destination is asked");
  await s.remote.flush();
  await s.remote.commit(5, ROOT);
  assert.deepEqual(await s.remote.resumeInfo(), {
    identity,
    committedGeneration: 5,
    merkleRoot: ROOT,
    cutTimeMs: 99,
    staged: null,
  }, "known from the commit's answer");
  assert.equal(resumes(), 1);
  await s.remote.close();
});
