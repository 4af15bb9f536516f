import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { PROOF_RECORD_BYTES, RESULT_BYTES } from "./handshake.ts";
import {
  encodeHello,
  HELLO_BYTES,
  HELLO_MAGIC,
  HelloRole,
  HelloStatus,
  PROTOCOL_VERSION,
  V1_HELLO_BYTES,
} from "./hello.ts";
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
  assert.equal(reply.length, 64 + 44, "server HELLO, then a failed RESULT");
  assert.equal(new DataView(reply.buffer).getUint32(64, true), 2);
  assert.equal(server.logs[0].event, "auth_failed");
});

function helloOf(role: number, version: number, status = 0): Uint8Array {
  return encodeHello({
    role,
    version,
    status,
    maxFramePayload: 65536,
    streamWindow: 65536,
    connectionWindow: 65536,
    nonce: status === 0 ? new Uint8Array(32).fill(5) : new Uint8Array(32),
  });
}

Deno.test("a client of a newer protocol version is refused with a version HELLO naming both versions", async () => {
  const server = capture();
  const [a, b] = memoryChannelPair();
  const accepting = Session.accept(b, { psk: PSK, logger: server.logger });
  const answer = rawExchange(a, [helloOf(HelloRole.CLIENT, 3)]);
  await assertRejectsCode(accepting, "PROTOCOL_VERSION");
  const reply = await answer;
  assert.equal(reply.length, HELLO_BYTES);
  assert.equal(reply[5], PROTOCOL_VERSION, "the server names its version");
  assert.equal(new DataView(reply.buffer).getUint16(6, true), HelloStatus.VERSION_UNSUPPORTED);
  assert.match(
    server.logs[0].message,
    /client speaks session protocol version 3, this server speaks 2: upgrade presync on this server/,
  );
});

Deno.test("a version-1 client (56-byte HELLO, no checksum) gets a refusal it can read", async () => {
  const server = capture();
  const [a, b] = memoryChannelPair();
  const accepting = Session.accept(b, { psk: PSK, logger: server.logger });
  const v1Hello = helloOf(HelloRole.CLIENT, 1).slice(0, V1_HELLO_BYTES);
  const answer = rawExchange(a, [v1Hello]);
  await assertRejectsCode(accepting, "PROTOCOL_VERSION");
  const reply = await answer;
  // What a version-1 client reads: its 56-byte HELLO layout, status 1, the server's version.
  assert.deepEqual([...reply.subarray(0, 4)], [...HELLO_MAGIC]);
  assert.equal(reply[5], 2);
  assert.equal(new DataView(reply.buffer).getUint16(6, true), HelloStatus.VERSION_UNSUPPORTED);
  assert.match(
    server.logs[0].message,
    /version 1, this server speaks 2: upgrade presync on the source/,
  );
});

Deno.test("a client facing a version-1 server's refusal gets PROTOCOL_VERSION: upgrade the destination", async () => {
  const [a, b] = memoryChannelPair();
  const connecting = Session.connect(a, { psk: PSK, logger: () => {} });
  const refusal = helloOf(HelloRole.SERVER, 1, HelloStatus.VERSION_UNSUPPORTED)
    .slice(0, V1_HELLO_BYTES);
  const exchange = rawExchange(b, [refusal]);
  const error = await assertRejectsCode(connecting, "PROTOCOL_VERSION");
  assert.match(error.message, /older presync \(session protocol 1\); this agent speaks 2/);
  assert.match(error.message, /upgrade presync on the destination/);
  assert.equal(error.retryable, false);
  await exchange;
});

Deno.test("a client facing a newer server's refusal gets PROTOCOL_VERSION: upgrade the source", async () => {
  const [a, b] = memoryChannelPair();
  const connecting = Session.connect(a, { psk: PSK, logger: () => {} });
  const exchange = rawExchange(b, [helloOf(HelloRole.SERVER, 7, HelloStatus.VERSION_UNSUPPORTED)]);
  const error = await assertRejectsCode(connecting, "PROTOCOL_VERSION");
  assert.match(error.message, /newer presync \(session protocol 7\); this agent speaks 2/);
  assert.match(error.message, /upgrade presync on the source/);
  await exchange;
});

/** `channel` with one bit flipped at byte `offset` of what it sends (`out`) or receives. */
function flipping(
  channel: ByteChannel,
  direction: "out" | "in",
  offset: number,
  bit: number,
): ByteChannel {
  let seen = 0;
  const flip = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      const copy = chunk.slice();
      if (offset >= seen && offset < seen + copy.length) copy[offset - seen] ^= 1 << bit;
      seen += copy.length;
      controller.enqueue(copy);
    },
  });
  if (direction === "in") return { ...channel, readable: channel.readable.pipeThrough(flip) };
  flip.readable.pipeTo(channel.writable).catch(() => {});
  return { ...channel, writable: flip.writable };
}

/** What one flipped bit may turn into: never a wrong key, never a version mismatch. */
const CORRUPTION_OUTCOMES = new Set(["HANDSHAKE_CORRUPT", "PROTOCOL_VIOLATION", "CONNECTION_LOST"]);

seededTest(
  "one flipped bit anywhere in the handshake, either way, is corruption (retryable), never AUTH_FAILED or PROTOCOL_VERSION",
  async (prng) => {
    const quiet = { psk: PSK, logger: () => {}, handshakeTimeoutMs: 2000 };
    const records = {
      out: HELLO_BYTES + PROOF_RECORD_BYTES,
      in: HELLO_BYTES + RESULT_BYTES,
    };
    for (const direction of ["out", "in"] as const) {
      for (let offset = 0; offset < records[direction]; offset++) {
        const bit = prng.int(8);
        const [a, b] = memoryChannelPair();
        const [client, server] = await Promise.allSettled([
          Session.connect(flipping(a, direction, offset, bit), quiet),
          Session.accept(b, quiet),
        ]);
        const where = `${direction} byte ${offset} bit ${bit}`;
        assert.equal(client.status, "rejected", `${where}: the client must notice`);
        const error = (client as PromiseRejectedResult).reason;
        assert.ok(CORRUPTION_OUTCOMES.has(error.code), `${where}: ${error.code} ${error.message}`);
        // Past the 6 bytes of magic and role, every byte is under a checksum.
        if (offset >= 6) {
          assert.equal(error.code, "HANDSHAKE_CORRUPT", `${where}: ${error.message}`);
          assert.ok(error.retryable);
        }
        if (server.status === "fulfilled") server.value.abort();
        else assert.notEqual(server.reason.code, "AUTH_FAILED", `${where}: server side`);
      }
    }
  },
);

Deno.test("an intact handshake with the wrong key is still AUTH_FAILED, not corruption", async () => {
  const [a, b] = memoryChannelPair();
  const [client] = await Promise.allSettled([
    Session.connect(a, { psk: OTHER, logger: () => {} }),
    Session.accept(b, { psk: PSK, logger: () => {} }),
  ]);
  const error = (client as PromiseRejectedResult).reason;
  assert.equal(error.code, "AUTH_FAILED");
  assert.equal(error.retryable, false);
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
