import { readAll as readAllBytes } from "../../fixtures/read_all.ts";
import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode, assertThrowsCode } from "../../fixtures/assert.ts";
import { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { encodeFrame, FrameType, Priority } from "./frame.ts";
import { clientHandshake } from "./handshake.ts";
import { memoryChannelPair } from "./memory_channel.ts";
import { Session } from "./session.ts";
import type { SessionLogEntry } from "./session_logger.ts";
import { resolveSessionConfig, type SessionOptions } from "./session_options.ts";
import type { SessionStream } from "./session_stream.ts";

const PSK = new Uint8Array(32).fill(42);

async function pair(
  options: Partial<SessionOptions> = {},
  bufferBytes?: number,
): Promise<{ client: Session; server: Session; logs: SessionLogEntry[] }> {
  const logs: SessionLogEntry[] = [];
  const logger = (entry: SessionLogEntry) => logs.push(entry);
  const [a, b] = memoryChannelPair(bufferBytes);
  const [client, server] = await Promise.all([
    Session.connect(a, { psk: PSK, logger, ...options }),
    Session.accept(b, { psk: PSK, logger, ...options }),
  ]);
  return { client, server, logs };
}

/** All bytes of a stream's readable side. */
function readAll(stream: SessionStream): Promise<Uint8Array> {
  return readAllBytes(stream.readable);
}

async function writeInPieces(prng: Prng, stream: SessionStream, data: Uint8Array): Promise<void> {
  const writer = stream.writable.getWriter();
  for (let offset = 0; offset < data.length;) {
    const n = 1 + prng.int(Math.min(data.length - offset, 70000));
    await writer.write(data.subarray(offset, offset + n));
    offset += n;
  }
  await writer.close();
}

seededTest(
  "100 concurrent streams of mixed priority all arrive intact and in order",
  async (prng) => {
    const { client, server } = await pair();
    const sent = new Map<number, Uint8Array>();
    const writers: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) {
      const stream = client.openStream(prng.int(3) as Priority);
      const data = new Prng(prng.nextU32()).fill(new Uint8Array(prng.int(200_000)));
      sent.set(stream.id, data);
      writers.push(writeInPieces(new Prng(prng.nextU32()), stream, data));
    }
    const readers: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) {
      const stream = (await server.acceptStream())!;
      readers.push(
        readAll(stream).then((got) => {
          const expected = sent.get(stream.id);
          assert.ok(expected, `stream ${stream.id} was opened`);
          assertBytesEqual(got, expected, `stream ${stream.id}`);
        }),
      );
    }
    await Promise.all([...writers, ...readers]);
    await client.close();
    await server.closed;
    assert.equal(await server.acceptStream(), null);
  },
);

Deno.test("a control message overtakes the bulk frames queued ahead of it", async () => {
  const { client, server } = await pair({}, 16384);
  const control = client.openStream(Priority.CONTROL);
  const controlWriter = control.writable.getWriter();
  await controlWriter.write(new Uint8Array([0]));
  const bulk = Array.from({ length: 4 }, () => client.openStream(Priority.BULK));
  const chunk = new Uint8Array(1 << 20);
  let stop = false;
  const pumps = bulk.map(async (s) => {
    const w = s.writable.getWriter();
    while (!stop) await w.write(chunk);
    await w.close();
  });
  const inbound: Promise<unknown>[] = [];
  let controlIn: SessionStream | undefined;
  for (let i = 0; i < 5; i++) {
    const s = (await server.acceptStream())!;
    if (s.priority === Priority.CONTROL) controlIn = s;
    else inbound.push(readAll(s));
  }
  const controlReader = controlIn!.readable.getReader();
  await controlReader.read(); // the first control byte
  while (client.stats().framesQueued[Priority.BULK] < 4) await new Promise((r) => setTimeout(r, 1));
  const before = client.stats();
  const sentAt = performance.now();
  await controlWriter.write(new Uint8Array([1]));
  const { value } = await controlReader.read();
  const latencyMs = performance.now() - sentAt;
  const bulkReceivedFirst = server.stats().framesReceived[Priority.BULK];
  assert.deepEqual(value, new Uint8Array([1]));
  assert.ok(before.framesQueued[Priority.BULK] >= 4);
  // At most the one bulk frame already being written may precede the control frame.
  assert.ok(
    bulkReceivedFirst <= before.framesSent[Priority.BULK] + 1,
    `control arrived after ${bulkReceivedFirst} bulk frames; ${before.framesSent[Priority.BULK]} ` +
      `were sent and ${before.framesQueued[Priority.BULK]} queued when it was written ` +
      `(${latencyMs.toFixed(1)} ms)`,
  );
  stop = true;
  await controlWriter.close();
  await Promise.all([...pumps, ...inbound, controlReader.read()]);
  await client.close();
  await server.closed;
});

Deno.test("a receiver that does not read holds at most its window; the writer waits", async () => {
  const { client, server } = await pair({
    streamWindowBytes: 65536,
    connectionWindowBytes: 131072,
  });
  const out = client.openStream(Priority.BULK);
  const writer = out.writable.getWriter();
  let written = 0;
  const pump = (async () => {
    const chunk = new Uint8Array(8192);
    while (written < 4 << 20) {
      await writer.write(chunk);
      written += chunk.length;
    }
  })().catch(() => {});
  const inbound = (await server.acceptStream())!;
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(inbound.bufferedBytes <= 65536, `buffered ${inbound.bufferedBytes}`);
  assert.ok(client.stats().bytesSent < 65536 + 65536 + 4096, `${client.stats().bytesSent} sent`);
  assert.ok(written < 4 << 20, "the writer is held back");
  await client.close();
  await server.closed;
  await pump;
});

Deno.test("a peer that ignores flow control is cut off with FLOW_CONTROL", async () => {
  const logs: SessionLogEntry[] = [];
  const [a, b] = memoryChannelPair();
  const serverP = Session.accept(b, {
    psk: PSK,
    streamWindowBytes: 16384,
    connectionWindowBytes: 16384,
    logger: (e) => logs.push(e),
  });
  const hs = await clientHandshake(a, resolveSessionConfig({ psk: PSK, logger: () => {} }));
  const server = await serverP;
  let seq = 0;
  const send = (type: number, flags: number, id: number, payload: Uint8Array) =>
    hs.writer.write(
      encodeFrame({ type: type as FrameType, flags, streamId: id, payload }, hs.sendKey, seq++),
    );
  await send(FrameType.OPEN, 0, 1, new Uint8Array([2]));
  // The server may hang up before the last write lands.
  for (let i = 0; i < 3; i++) {
    await send(FrameType.DATA, 0, 1, new Uint8Array(10000)).catch(() => {});
  }
  await assertRejectsCode(server.closed, "FLOW_CONTROL");
  assert.ok(logs.some((e) => e.event === "protocol_error" && /flow control/.test(e.message)));
  a.close();
});

Deno.test("ping measures a round trip; goaway ends the session cleanly for both", async () => {
  const { client, server } = await pair();
  const rtt = await client.ping();
  assert.ok(rtt > 0 && client.rttMs !== undefined);
  const accepting = server.acceptStream();
  await client.close();
  assert.equal(await accepting, null);
  await server.closed;
  await client.closed;
  assertThrowsCode(() => client.openStream(Priority.BULK), "SESSION_CLOSED");
  assertThrowsCode(() => server.openStream(Priority.BULK), "SESSION_CLOSED");
});

Deno.test("a reset stream fails the reader on the other side with STREAM_RESET", async () => {
  const { client, server } = await pair();
  const out = client.openStream(Priority.ON_DEMAND);
  const writer = out.writable.getWriter();
  await writer.write(new Uint8Array(10));
  const inbound = (await server.acceptStream())!;
  const reader = inbound.readable.getReader();
  await reader.read();
  out.reset();
  await assertRejectsCode(reader.read(), "STREAM_RESET");
  await assertRejectsCode(writer.write(new Uint8Array(1)), "STREAM_RESET");
  await client.close();
  await server.closed;
});

Deno.test("a dropped channel fails both sessions and their streams with CONNECTION_LOST", async () => {
  const [a, b] = memoryChannelPair();
  const quiet = { psk: PSK, logger: () => {} };
  const [client, server] = await Promise.all([Session.connect(a, quiet), Session.accept(b, quiet)]);
  const out = client.openStream(Priority.BULK);
  await out.writable.getWriter().write(new Uint8Array(5));
  const inbound = (await server.acceptStream())!;
  a.close();
  await assertRejectsCode(server.closed, "CONNECTION_LOST");
  await assertRejectsCode(client.closed, "CONNECTION_LOST");
  await assertRejectsCode(
    inbound.readable.getReader().read().then(() => inbound.readable.getReader().read()),
    "CONNECTION_LOST",
  ).catch(() => {});
});
