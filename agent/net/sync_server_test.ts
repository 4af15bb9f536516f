import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { sessionPair } from "../../fixtures/session_pair.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { PacedDestination } from "../daemon/paced_destination.ts";
import { concatBytes } from "../bytes.ts";
import { Bitmap } from "../core/mod.ts";
import { pageDigests } from "../volume/page_masks.ts";
import { ErrorCode } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { openSourceVolume, type SourceVolume } from "../source/open_source_volume.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { sendGeneration } from "../sync/send_generation.ts";
import { Priority } from "../wire/frame.ts";
import type { Session } from "../wire/session.ts";
import { MessageKind, MessageReader, MessageWriter, parseJsonBody } from "./message_stream.ts";
import { RemoteDestination } from "./remote_destination.ts";
import { SyncOp } from "./sync_messages.ts";
import { bitmapToWire, encodeBlockMessage, MAX_SYNC_MESSAGE_BYTES } from "./sync_protocol.ts";
import { SyncServer } from "./sync_server.ts";
import type { Logger } from "../log.ts";

const fs = new DenoFileSystem();
const codec = createZstdCodec();
const agentA = { instance: "aaaaaaaaaaaaaaaa", host: "db1", pid: 11 };
const agentB = { instance: "bbbbbbbbbbbbbbbb", host: "db1-copy", pid: 22 };

/** A destination (sync server over a store in a temp dir) and a source volume. */
async function rig() {
  const root = await Deno.makeTempDir({ prefix: "presync-sync-server-" });
  const image = `${root}/source.img`;
  const bytes = new Uint8Array(300 * 1024);
  crypto.getRandomValues(bytes.subarray(0, 65536));
  bytes.fill(9, 200 * 1024, 250 * 1024);
  await Deno.writeFile(image, bytes);
  const lines: { event: string; fields: Record<string, unknown> }[] = [];
  const log: Logger = (_level, event, fields = {}) => void lines.push({ event, fields });
  const server = new SyncServer(
    new ReplicaStore(new DirectoryBackend(fs, `${root}/store`)),
    [codec, createNoneCodec()],
    log,
  );
  const volume = await openSourceVolume({
    fs,
    name: "vm1",
    imagePath: image,
    stateDir: `${root}/state`,
    blockSize: 65536,
  });
  return {
    root,
    image,
    server,
    volume,
    lines,
    /** A source session served by the server. */
    async connect() {
      const pair = await sessionPair();
      server.serveSession(pair.server);
      return pair;
    },
    async [Symbol.asyncDispose]() {
      await volume.tracker.close();
      volume.state.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Opens the volume on a new bulk stream of `session` as `source`. */
function open(session: Session, volume: SourceVolume, source = agentA) {
  return RemoteDestination.open(session.openStream(Priority.BULK), volume.state.identity, source);
}

Deno.test("sync server: a generation sent over a session commits, and the replica is the image", async () => {
  await using r = await rig();
  await using pair = await r.connect();
  const { remote, resume } = await open(pair.client, r.volume);
  assert.equal(resume.committedGeneration, 0);
  const counters = { rawBytes: 0, wireBytes: 0 };
  const destination = new PacedDestination(remote, {
    codec,
    counters,
    pace: () => Promise.resolve(),
  });
  const cut = await r.volume.tracker.cut();
  await r.volume.state.recordCut(cut.dirty, 1234);
  const report = await sendGeneration(r.volume.state, cut, destination);
  await cut.release();
  assert.equal(report.generation, 1);
  assert.ok(counters.wireBytes < counters.rawBytes, "the repeated bytes were compressed");
  assert.deepEqual(r.server.volumes.get("vm1"), {
    committedGeneration: 1,
    cutTimeMs: 1234,
    connected: true,
  });
  const check = await remote.verify(report.merkleRoot);
  assert.equal(check.report.ok, true);
  assert.equal(check.report.rootMatches, true);
  await remote.close();
  assert.equal(await hashFile(`${r.root}/store/vm1/image`), await hashFile(r.image));
});

Deno.test("sync server: a second live agent is refused by name; the holder keeps the volume", async () => {
  await using r = await rig();
  await using first = await r.connect();
  await using second = await r.connect();
  const { remote } = await open(first.client, r.volume, agentA);
  const refused = await assertRejectsCode(
    open(second.client, r.volume, agentB),
    ErrorCode.VOLUME_HELD,
  );
  assert.equal(refused.retryable, false);
  for (
    const side of ["agent aaaaaaaaaaaa on db1 (pid 11)", "agent bbbbbbbbbbbb on db1-copy (pid 22)"]
  ) {
    assert.ok(refused.message.includes(side), refused.message);
  }
  assert.match(refused.message, /state directory copied/);
  assert.ok(r.lines.some((l) => l.event === "source_refused"));
  // An agent that does not name itself is refused the same way while the holder answers.
  await assertRejectsCode(
    RemoteDestination.open(second.client.openStream(Priority.BULK), r.volume.state.identity),
    ErrorCode.VOLUME_HELD,
  );
  assert.equal((await remote.resumeInfo()).committedGeneration, 0, "the holder goes on");
  await remote.close();
});

Deno.test("sync server: the same agent on a new session takes over at once; a gone one is replaced", async () => {
  await using r = await rig();
  await using first = await r.connect();
  await using second = await r.connect();
  const old = await open(first.client, r.volume, agentA);
  // Same instance (a reconnect the destination has not noticed): taken over, old stream reset.
  const again = await open(second.client, r.volume, agentA);
  await assertRejectsCode(old.remote.resumeInfo(), ErrorCode.STREAM_RESET);
  assert.ok(
    r.lines.some((l) =>
      l.event === "source_takeover" && /same agent/.test(String(l.fields.reason))
    ),
  );
  // The holder's agent dies: another agent gets the volume.
  second.client.abort();
  await using third = await r.connect();
  const other = await open(third.client, r.volume, agentB);
  assert.equal((await other.remote.resumeInfo()).committedGeneration, 0);
  await again.remote.close();
  await other.remote.close();
});

Deno.test("sync server: malformed messages get a coded error reply and end only their stream", async () => {
  await using r = await rig();
  await using pair = await r.connect();
  const raw = async (messages: unknown[]) => {
    const stream = pair.client.openStream(Priority.BULK);
    const writer = new MessageWriter(stream.writable);
    const reader = new MessageReader(stream.readable, MAX_SYNC_MESSAGE_BYTES);
    for (const m of messages) await writer.writeJson(m);
    const replies = [];
    for (let m = await reader.read(); m !== null; m = await reader.read()) {
      assert.equal(m.kind, MessageKind.JSON);
      replies.push(parseJsonBody(m.body) as Record<string, unknown>);
    }
    await writer.close();
    return replies;
  };
  const notOpen = await raw([{ op: SyncOp.RESUME }]);
  assert.deepEqual(notOpen.map((m) => m.code), [ErrorCode.PROTOCOL_VIOLATION]);
  const identity = r.volume.state.identity;
  const bad = await raw([
    { op: SyncOp.OPEN, volume: "vm1", identity, source: agentA },
    { op: "frobnicate" },
  ]);
  assert.equal(bad[0].ok, true);
  assert.equal(bad[1].code, ErrorCode.PROTOCOL_VIOLATION);
  assert.match(String(bad[1].message), /op must be resume, begin/);
  const escape = await raw([{ op: SyncOp.OPEN, volume: "../etc", identity }]);
  assert.equal(escape[0].code, ErrorCode.INVALID_VOLUME_NAME);
  // The session serves new streams as before.
  const { remote } = await open(pair.client, r.volume);
  await remote.close();
  assert.deepEqual(await new ReplicaStore(new DirectoryBackend(fs, `${r.root}/store`)).list(), [
    "vm1",
  ]);
});

Deno.test("sync server: a PATCH not agreed in open or past the volume's end is a protocol violation; a corrupt patch is rejected, a mismatching one named for resend", async () => {
  await using r = await rig();
  await using pair = await r.connect();
  const identity = r.volume.state.identity;
  const exchange = async (
    open: Record<string, unknown>,
    send: (w: MessageWriter) => Promise<void>,
  ) => {
    const stream = pair.client.openStream(Priority.BULK);
    const writer = new MessageWriter(stream.writable);
    const reader = new MessageReader(stream.readable, MAX_SYNC_MESSAGE_BYTES);
    await writer.writeJson(open);
    await send(writer);
    const replies = [];
    for (let m = await reader.read(); m !== null; m = await reader.read()) {
      replies.push(parseJsonBody(m.body) as Record<string, unknown>);
    }
    await writer.close();
    return replies;
  };
  const base = { op: SyncOp.OPEN, volume: "vm1", identity, source: agentA };
  const hash = new Uint8Array(32);
  // A raw frame of a patch: run 0 = 4 bytes at offset 8.
  const patch = new Uint8Array([1, 8, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
  const frame = new Uint8Array([1, patch.length, 0, 0, 0, ...patch]);
  const notAgreed = await exchange(base, async (w) => {
    await w.write(MessageKind.PATCH, encodeBlockMessage(0, hash, frame));
  });
  assert.equal(notAgreed[0].ok, true);
  assert.equal(notAgreed[0].patches, undefined, "no patches without the offer");
  assert.equal(notAgreed[1].code, ErrorCode.PROTOCOL_VIOLATION);
  assert.match(String(notAgreed[1].message), /unknown sync message kind 3/);
  using dirty = new Bitmap(5).setRange(0, 5);
  const corrupt = new Uint8Array([1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // no runs
  const agreed = await exchange({ ...base, patches: true }, async (w) => {
    await w.writeJson({
      op: SyncOp.BEGIN,
      generation: 1,
      cutTimeMs: 1,
      dirty: bitmapToWire(dirty),
    });
    await w.write(MessageKind.PATCH, encodeBlockMessage(1, hash, corrupt));
    await w.write(MessageKind.PATCH, encodeBlockMessage(2, hash, frame)); // hash is not of the result
    await w.writeJson({ op: SyncOp.FLUSH, seq: 1 });
    await w.write(MessageKind.PATCH, encodeBlockMessage(5, hash, frame));
  });
  assert.equal(agreed[0].patches, true);
  assert.equal(agreed[1].ok, true);
  assert.deepEqual(agreed[2], { ok: true, seq: 1, rejected: [1], resend: [2] });
  assert.equal(agreed[3].code, ErrorCode.PROTOCOL_VIOLATION);
  assert.match(String(agreed[3].message), /patch of block 5 is past the end of volume vm1/);
  assert.deepEqual(
    r.lines.filter((l) => l.event === "patch_base_differs").map((l) => l.fields.block),
    [2],
  );
});

Deno.test("sync server: page digests are of the committed copies; a block past the end is a protocol violation", async () => {
  await using r = await rig();
  await using pair = await r.connect();
  const { remote } = await open(pair.client, r.volume);
  // A new replica is all zeros; its last block is 300 KiB - 4 × 64 KiB = 44 KiB: 11 pages.
  const zeros = pageDigests(new Uint8Array(65536));
  const lastZeros = pageDigests(new Uint8Array(45056));
  assertBytesEqual(
    await remote.pageDigests([1, 4]),
    concatBytes([zeros, lastZeros]),
    "page digests of blocks 1 and 4",
  );
  await assertRejectsCode(remote.pageDigests([5]), ErrorCode.PROTOCOL_VIOLATION);
  await remote.close();
});
