import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { encodeHello, HelloRole, HelloStatus } from "./hello.ts";
import { memoryChannelPair } from "./memory_channel.ts";
import { Session } from "./session.ts";
import type { SessionLogEntry } from "./session_logger.ts";
import type { ByteChannel } from "./transport.ts";

const PSK = new Uint8Array(32).fill(1);
const OTHER = new Uint8Array(32).fill(2);

function capture(): { logs: SessionLogEntry[]; logger: (e: SessionLogEntry) => void } {
  const logs: SessionLogEntry[] = [];
  return { logs, logger: (e) => logs.push(e) };
}

/** Sends raw bytes on a channel and collects everything the other side answers. */
async function rawExchange(channel: ByteChannel, bytes: Uint8Array[]): Promise<Uint8Array> {
  const writer = channel.writable.getWriter();
  for (const b of bytes) await writer.write(b).catch(() => {});
  const parts: number[] = [];
  for await (const chunk of channel.readable) parts.push(...chunk);
  return new Uint8Array(parts);
}

Deno.test("wrong key: client gets AUTH_FAILED, server logs auth_failed, nothing else leaks", async () => {
  const server = capture();
  const [a, b] = memoryChannelPair();
  const [clientResult, serverResult] = await Promise.allSettled([
    Session.connect(a, { psk: OTHER, logger: () => {} }),
    Session.accept(b, { psk: PSK, logger: server.logger }),
  ]);
  assert.equal(clientResult.status, "rejected");
  await assertRejectsCode(
    Promise.reject((clientResult as PromiseRejectedResult).reason),
    "AUTH_FAILED",
  );
  await assertRejectsCode(
    Promise.reject((serverResult as PromiseRejectedResult).reason),
    "AUTH_FAILED",
  );
  assert.equal(server.logs.length, 1);
  assert.equal(server.logs[0].event, "auth_failed");
  assert.match(server.logs[0].message, /memory:a .*wrong pre-shared key, or a replayed handshake/);
});

Deno.test("a replayed client transcript fails: the server's fresh nonce changes the proof", async () => {
  // Record what a genuine client sends.
  const [a, b] = memoryChannelPair();
  const recorded: Uint8Array[] = [];
  const tap = a.writable.getWriter();
  const recording: ByteChannel = {
    ...a,
    writable: new WritableStream({
      write: (chunk) => {
        recorded.push(chunk.slice());
        return tap.write(chunk);
      },
    }),
  };
  const quiet = { psk: PSK, logger: () => {} };
  const [client, first] = await Promise.all([
    Session.connect(recording, quiet),
    Session.accept(b, quiet),
  ]);
  await client.close();
  await first.closed;
  // Replay HELLO and PROOF verbatim to a new server session.
  const server = capture();
  const [c, d] = memoryChannelPair();
  const accepting = Session.accept(d, { psk: PSK, logger: server.logger });
  const answer = rawExchange(c, recorded.slice(0, 2));
  await assertRejectsCode(accepting, "AUTH_FAILED");
  const reply = await answer;
  assert.equal(reply.length, 56 + 36, "server HELLO, then a failed RESULT");
  assert.equal(new DataView(reply.buffer).getUint32(56, true), 2);
  assert.equal(server.logs[0].event, "auth_failed");
});

Deno.test("a client of another protocol version is refused with a version HELLO and a log line", async () => {
  const server = capture();
  const [a, b] = memoryChannelPair();
  const accepting = Session.accept(b, { psk: PSK, logger: server.logger });
  const hello = encodeHello({
    role: HelloRole.CLIENT,
    version: 2,
    status: 0,
    maxFramePayload: 65536,
    streamWindow: 65536,
    connectionWindow: 65536,
    nonce: new Uint8Array(32),
  });
  const answer = rawExchange(a, [hello]);
  await assertRejectsCode(accepting, "PROTOCOL_VERSION");
  const reply = await answer;
  assert.equal(reply[5], 1, "the server names its version");
  assert.equal(new DataView(reply.buffer).getUint16(6, true), HelloStatus.VERSION_UNSUPPORTED);
  assert.match(
    server.logs[0].message,
    /client speaks session protocol version 2, this server speaks 1/,
  );
});

Deno.test("a client facing a server of another version gets PROTOCOL_VERSION", async () => {
  const [a, b] = memoryChannelPair();
  const connecting = Session.connect(a, { psk: PSK, logger: () => {} });
  const reply = encodeHello({
    role: HelloRole.SERVER,
    version: 7,
    status: HelloStatus.VERSION_UNSUPPORTED,
    maxFramePayload: 0,
    streamWindow: 0,
    connectionWindow: 0,
    nonce: new Uint8Array(32),
  });
  const exchange = rawExchange(b, [reply]);
  const error = await assertRejectsCode(connecting, "PROTOCOL_VERSION");
  assert.match(error.message, /speaks session protocol version 7, this client speaks 1/);
  await exchange;
});

Deno.test("garbage instead of a hello: server logs 'not a presync client', client sees PROTOCOL_VIOLATION", async () => {
  const server = capture();
  const [a, b] = memoryChannelPair();
  const accepting = Session.accept(b, { psk: PSK, logger: server.logger });
  const garbage = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n".padEnd(64, "x"));
  const answer = rawExchange(a, [garbage]);
  await assertRejectsCode(accepting, "PROTOCOL_VIOLATION");
  assert.equal((await answer).length, 0, "nothing is revealed");
  assert.match(server.logs[0].message, /not a presync client: expected HELLO magic/);

  const [c, d] = memoryChannelPair();
  const connecting = Session.connect(c, { psk: PSK, logger: () => {} });
  const exchange = rawExchange(d, [garbage]);
  const error = await assertRejectsCode(connecting, "PROTOCOL_VIOLATION");
  assert.match(error.message, /not a presync server/);
  await exchange;
});

Deno.test("a silent peer: the handshake times out with TIMEOUT", async () => {
  const server = capture();
  const [a, b] = memoryChannelPair();
  const accepting = Session.accept(b, { psk: PSK, logger: server.logger, handshakeTimeoutMs: 50 });
  await assertRejectsCode(accepting, "TIMEOUT");
  assert.equal(server.logs[0].event, "handshake_failed");
  a.close();
});
