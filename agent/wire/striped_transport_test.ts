import { readAll as readAllBytes } from "../../fixtures/read_all.ts";
import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { tcpTransport } from "../../plugins/transport-tcp/mod.ts";
import { Priority } from "./frame.ts";
import { Session } from "./session.ts";
import type { SessionLogEntry } from "./session_logger.ts";
import type { SessionStream } from "./session_stream.ts";
import { stripedTransport } from "./striped_transport.ts";
import type { ByteChannel, Transport } from "./transport.ts";

const PSK = new Uint8Array(32).fill(11);
const LOOPBACK = { hostname: "127.0.0.1", port: 0 };
const quiet = { psk: PSK, logger: () => {} };

/** TCP that remembers its client channels and counts the bytes each accepted one receives. */
function observedTcp(): { transport: Transport; clients: ByteChannel[]; received: number[] } {
  const clients: ByteChannel[] = [];
  const received: number[] = [];
  const transport: Transport = {
    name: "tcp",
    async connect(address, signal) {
      const channel = await tcpTransport.connect(address, signal);
      clients.push(channel);
      return channel;
    },
    listen(address) {
      const listener = tcpTransport.listen(address);
      return {
        ...listener,
        addr: listener.addr,
        accept: async () => {
          const channel = await listener.accept();
          const slot = received.push(0) - 1;
          const counted = channel.readable.pipeThrough(
            new TransformStream<Uint8Array, Uint8Array>({
              transform(chunk, controller) {
                received[slot] += chunk.length;
                controller.enqueue(chunk);
              },
            }),
          );
          return { ...channel, readable: counted, close: () => channel.close() };
        },
      };
    },
  };
  return { transport, clients, received };
}

/** All bytes of a stream's readable side. */
function readAll(stream: SessionStream): Promise<Uint8Array> {
  return readAllBytes(stream.readable);
}

seededTest(
  "striping: 40 streams over 4 members arrive intact and in order; every member carries data",
  async (prng) => {
    const tcp = observedTcp();
    const striped = stripedTransport(tcp.transport, { ...quiet, members: 4 });
    const listener = striped.listen(LOOPBACK);
    const [client, server] = await Promise.all([
      striped.connect(listener.addr).then((ch) => Session.connect(ch, quiet)),
      listener.accept().then((ch) => Session.accept(ch, quiet)),
    ]);
    listener.close();
    const sent = new Map<number, Uint8Array>();
    const writers: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      const stream = client.openStream(prng.int(3) as Priority);
      const data = new Prng(prng.nextU32()).fill(new Uint8Array(prng.int(300_000)));
      sent.set(stream.id, data);
      writers.push((async () => {
        const writer = stream.writable.getWriter();
        for (let offset = 0; offset < data.length; offset += 50_000) {
          await writer.write(data.subarray(offset, offset + 50_000));
        }
        await writer.close();
      })());
    }
    const readers: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
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
    await client.closed;
    assert.equal(tcp.received.length, 4);
    for (const [i, bytes] of tcp.received.entries()) {
      assert.ok(bytes > 100_000, `member ${i} received only ${bytes} bytes`);
    }
  },
);

Deno.test("striping: cutting one member fails both sessions promptly with CONNECTION_LOST", async () => {
  const tcp = observedTcp();
  const striped = stripedTransport(tcp.transport, { ...quiet, members: 4 });
  const listener = striped.listen(LOOPBACK);
  const [client, server] = await Promise.all([
    striped.connect(listener.addr).then((ch) => Session.connect(ch, quiet)),
    listener.accept().then((ch) => Session.accept(ch, quiet)),
  ]);
  listener.close();
  const writer = client.openStream(Priority.BULK).writable.getWriter();
  const sending = (async () => {
    for (let i = 0; i < 1000; i++) await writer.write(new Uint8Array(65536));
  })().then(() => assert.fail("the writer should fail"), (error) => error);
  const reader = (await server.acceptStream())!.readable.getReader();
  await reader.read();
  tcp.clients[2].close();
  await assertRejectsCode(server.closed, "CONNECTION_LOST");
  await assertRejectsCode(client.closed, "CONNECTION_LOST");
  const error = await sending;
  assert.equal(error.code, "CONNECTION_LOST");
  await reader.read().then(() => reader.read()).catch(() => {});
});

Deno.test("striping: a member without the key cannot join; the client gets AUTH_FAILED", async () => {
  const logs: SessionLogEntry[] = [];
  const server = stripedTransport(tcpTransport, { psk: PSK, logger: (e) => logs.push(e) });
  const listener = server.listen(LOOPBACK);
  const intruder = stripedTransport(tcpTransport, {
    psk: new Uint8Array(32).fill(1),
    members: 2,
    logger: () => {},
  });
  await assertRejectsCode(intruder.connect(listener.addr), "AUTH_FAILED");
  // The one with the key gets a stripe; the intruder's members joined nothing.
  const good = stripedTransport(tcpTransport, { ...quiet, members: 2 });
  const [client, accepted] = await Promise.all([
    good.connect(listener.addr).then((ch) => Session.connect(ch, quiet)),
    listener.accept().then((ch) => Session.accept(ch, quiet)),
  ]);
  listener.close();
  assert.ok(logs.length >= 1 && logs.every((e) => e.event === "auth_failed"), JSON.stringify(logs));
  await client.close();
  await accepted.closed;
});

Deno.test("a striped client to a plain listener: the server's log says to start serve with --striped", async () => {
  const logs: SessionLogEntry[] = [];
  const listener = tcpTransport.listen(LOOPBACK);
  const accepted: Promise<unknown>[] = [];
  const serving = (async () => {
    for await (const channel of listener) {
      accepted.push(
        Session.accept(channel, { psk: PSK, logger: (e) => logs.push(e) }).then(
          (s) => s.closed,
        ).catch(() => {}),
      );
    }
  })();
  const striped = stripedTransport(tcpTransport, { ...quiet, members: 2 });
  await assertRejectsCode(
    striped.connect(listener.addr).then((ch) => Session.connect(ch, quiet)),
    "CONNECTION_LOST",
  );
  listener.close();
  await serving;
  await Promise.all(accepted);
  const errors = logs.filter((e) => e.event === "protocol_error");
  assert.ok(errors.length >= 1, JSON.stringify(logs));
  for (const e of errors) assert.match(e.message, /start serve with --striped/);
});
