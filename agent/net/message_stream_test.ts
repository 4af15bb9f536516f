import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import {
  MESSAGE_HEADER_BYTES,
  MessageKind,
  MessageReader,
  MessageWriter,
} from "./message_stream.ts";

/** A byte stream delivering `chunks` as they are. */
function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks);
}

/** The bytes `messages` are on the wire, written by a MessageWriter. */
async function encode(messages: { kind: number; body: Uint8Array }[]): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const writer = new MessageWriter(new WritableStream({ write: (c) => void parts.push(c) }));
  for (const m of messages) await writer.write(m.kind, m.body);
  await writer.close();
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

/** `bytes` cut at random points. */
function split(prng: Prng, bytes: Uint8Array): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < bytes.length;) {
    const n = 1 + prng.int(Math.min(bytes.length - at, 1 + prng.int(64)));
    chunks.push(bytes.slice(at, at + n));
    at += n;
  }
  return chunks;
}

async function readAll(reader: MessageReader) {
  const out = [];
  for (let m = await reader.read(); m !== null; m = await reader.read()) {
    out.push({ kind: m.kind, body: m.body.slice() });
  }
  return out;
}

seededTest("messages come out whole and in order, however the bytes are split", async (prng) => {
  for (let round = 0; round < 200; round++) {
    const messages = Array.from({ length: 1 + prng.int(6) }, () => ({
      kind: prng.int(2) === 0 ? MessageKind.JSON : MessageKind.BLOCK,
      body: prng.fill(new Uint8Array(prng.int(300))),
    }));
    const bytes = await encode(messages);
    const read = await readAll(new MessageReader(streamOf(split(prng, bytes)), 1024));
    assert.equal(read.length, messages.length, `round ${round}: messages`);
    read.forEach((m, i) => {
      assert.equal(m.kind, messages[i].kind, `round ${round}: message ${i} kind`);
      assertBytesEqual(m.body, messages[i].body, `round ${round}: message ${i} body`);
    });
  }
});

Deno.test("a message inside one received chunk is handed over without a copy", async () => {
  const bytes = await encode([{ kind: MessageKind.BLOCK, body: new Uint8Array(1000).fill(7) }]);
  const reader = new MessageReader(streamOf([bytes]), 4096);
  const message = await reader.read();
  assert.equal(message!.body.buffer, bytes.buffer);
  assert.equal(message!.body.byteOffset, MESSAGE_HEADER_BYTES);
});

Deno.test("a length over the limit is refused before anything is read or allocated", async () => {
  const header = new Uint8Array(MESSAGE_HEADER_BYTES);
  new DataView(header.buffer).setUint32(0, 0xffff_fff0, true);
  header[4] = MessageKind.JSON;
  let pulled = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(pulled === 1 ? header : new Uint8Array(1 << 16));
    },
  }, { highWaterMark: 0 });
  const err = await assertRejectsCode(
    new MessageReader(stream, 1 << 20).read(),
    ErrorCode.PROTOCOL_VIOLATION,
  );
  assert.match(err.message, /4294967280 bytes exceeds the limit of 1048576/);
  assert.equal(pulled, 1, "nothing past the header was read");
});

Deno.test("an end between messages is clean; inside one it is a lost connection", async () => {
  const bytes = await encode([{ kind: MessageKind.JSON, body: new Uint8Array(10) }]);
  assert.equal(await new MessageReader(streamOf([]), 64).read(), null);
  for (const cut of [1, MESSAGE_HEADER_BYTES, bytes.length - 1]) {
    const reader = new MessageReader(streamOf([bytes.subarray(0, cut)]), 64);
    const err = await assertRejectsCode(reader.read(), ErrorCode.CONNECTION_LOST);
    assert.equal(err.retryable, true);
  }
});

seededTest("message reader fuzz: random bytes give messages or a coded error", async (prng) => {
  for (let round = 0; round < 2000; round++) {
    const bytes = prng.fill(new Uint8Array(prng.int(100)));
    // Small lengths, so that some random headers describe whole messages.
    for (let at = 0; at + 4 <= bytes.length; at += 1 + prng.int(20)) bytes[at + 1] = 0;
    try {
      await readAll(new MessageReader(streamOf(split(prng, bytes)), 64));
    } catch (err) {
      assert.ok(err instanceof PresyncError, `round ${round}: ${err}`);
      assert.ok(
        err.code === ErrorCode.PROTOCOL_VIOLATION || err.code === ErrorCode.CONNECTION_LOST,
        err.code,
      );
    }
  }
});
