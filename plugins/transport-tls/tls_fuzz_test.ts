import assert from "node:assert/strict";
import { PresyncError } from "../../agent/errors.ts";
import { Priority, Session, type SessionOptions } from "../../agent/wire/mod.ts";
import type { Transport } from "../../agent/wire/transport.ts";
import { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { hasOpenssl, makeTestCerts } from "../../fixtures/test_certs.ts";
import { TamperProxy, TlsRecordTamper } from "../../fixtures/tls_tamper.ts";
import { certificateFingerprint, tlsTransport } from "./mod.ts";

const ignore = !hasOpenssl();
const certs = ignore ? undefined : await makeTestCerts();
const RUNS = 24;
const UP_BYTES = 384 * 1024;
const DOWN_BYTES = 128 * 1024;
/** What a failed session over a tampered TLS link may end with: a retryable link error. */
const LINK_ERRORS = new Set(["CONNECTION_LOST", "LINK_DEAD", "TIMEOUT"]);

const options: SessionOptions = {
  psk: new Uint8Array(32).fill(9),
  logger: () => {},
  idleTimeoutMs: 2000,
  keepaliveIntervalMs: 400,
  handshakeTimeoutMs: 3000,
};

/** Byte i of a transfer: checks that nothing corrupt is ever delivered. */
const patternByte = (i: number) => (i * 7 + 3) & 0xFF;

async function send(session: Session, bytes: number): Promise<void> {
  const writer = session.openStream(Priority.BULK).writable.getWriter();
  for (let sent = 0; sent < bytes;) {
    const chunk = Uint8Array.from(
      { length: Math.min(16384, bytes - sent) },
      (_, k) => patternByte(sent + k),
    );
    await writer.write(chunk);
    sent += chunk.length;
  }
  await writer.close();
}

async function receive(session: Session): Promise<number> {
  const stream = await session.acceptStream();
  assert.ok(stream, "the peer opens a stream");
  let got = 0;
  for await (const chunk of stream.readable) {
    for (const byte of chunk) {
      assert.equal(byte, patternByte(got), `byte ${got} delivered corrupt`);
      got++;
    }
  }
  return got;
}

/** One run: client and server exchange data through a tampering proxy. */
async function run(client: Transport, prng: Prng, rate: number): Promise<{
  outcomes: PromiseSettledResult<number>[];
  tampered: number;
}> {
  const listener = tlsTransport({ cert: certs!.certPem, key: certs!.keyPem })
    .listen({ hostname: "127.0.0.1", port: 0 });
  const skip = prng.int(8);
  const proxy = new TamperProxy(
    listener.addr,
    () => new TlsRecordTamper(new Prng(prng.nextU32()), rate, skip),
  );
  const outcomes = await Promise.allSettled([
    (async () => {
      const session = await Session.connect(await client.connect(proxy.addr), options);
      try {
        const [, got] = await Promise.all([send(session, UP_BYTES), receive(session)]);
        await session.close();
        return got;
      } finally {
        session.abort();
      }
    })(),
    (async () => {
      const session = await Session.accept(await listener.accept(), options);
      try {
        const [got] = await Promise.all([receive(session), send(session, DOWN_BYTES)]);
        await session.closed;
        return got;
      } finally {
        session.abort();
      }
    })(),
  ]);
  listener.close();
  const tampered = proxy.tampered;
  await proxy.close();
  return { outcomes, tampered };
}

seededTest(
  "tls fuzz: tampered records (flipped, forged, garbage, replayed, dropped) end a session with a retryable link error, never an uncaught error or corrupt data",
  async (prng) => {
    if (ignore) return;
    const uncaught: unknown[] = [];
    const onError = (event: ErrorEvent) => {
      event.preventDefault();
      uncaught.push(event.error);
    };
    const onRejection = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      uncaught.push(event.reason);
    };
    globalThis.addEventListener("error", onError);
    globalThis.addEventListener("unhandledrejection", onRejection);
    try {
      const pin = await certificateFingerprint(certs!.certPem);
      const connectTimeoutMs = 3000;
      const clients = [
        tlsTransport({ pinSha256: pin, connectTimeoutMs }),
        tlsTransport({ caCerts: [certs!.caPem], connectTimeoutMs }),
      ];
      let failed = 0;
      let tampered = 0;
      for (let i = 0; i < RUNS; i++) {
        const result = await run(clients[i % 2], prng, 0.02 + prng.int(8) / 100);
        tampered += result.tampered;
        for (const outcome of result.outcomes) {
          if (outcome.status === "fulfilled") continue;
          failed++;
          const error = outcome.reason;
          assert.ok(error instanceof PresyncError, `run ${i}: not a PresyncError: ${error}`);
          assert.ok(LINK_ERRORS.has(error.code), `run ${i}: ${error.code}: ${error.message}`);
          assert.ok(error.retryable, `run ${i}: ${error.code} must be retryable`);
        }
        const [up, down] = result.outcomes;
        if (up.status === "fulfilled") assert.equal(up.value, DOWN_BYTES);
        if (down.status === "fulfilled") assert.equal(down.value, UP_BYTES);
      }
      assert.deepEqual(uncaught, [], "no uncaught error");
      assert.ok(tampered > 0 && failed > 0, "the runs tampered with records and failed sessions");
    } finally {
      globalThis.removeEventListener("error", onError);
      globalThis.removeEventListener("unhandledrejection", onRejection);
    }
  },
);
