import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { Priority } from "../wire/frame.ts";
import { memoryChannelPair } from "../wire/memory_channel.ts";
import { Session } from "../wire/session.ts";
import { readAll } from "../../fixtures/read_all.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { MAX_TUNNEL_CHUNK_BYTES, runMemoryTunnel } from "./memory_tunnel.ts";

const PSK = new Uint8Array(32).fill(7);
const codec = createZstdCodec();
const codecs = [codec, createNoneCodec()];

/** Fails with the test's name of what hung when `promise` takes longer than `ms`. */
async function within<T>(what: string, promise: Promise<T>, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A QEMU end of a tunnel: what it writes, the tunnel reads, and the other way round. */
function fakeQemu() {
  const out = new TransformStream<Uint8Array, Uint8Array>();
  const back = new TransformStream<Uint8Array, Uint8Array>();
  return {
    end: { readable: out.readable, writable: back.writable },
    writable: out.writable,
    readable: back.readable,
  };
}

/** Two sessions over an in-memory link and a memory stream between them. */
async function link() {
  const [a, b] = memoryChannelPair();
  const [client, server] = await Promise.all([
    Session.connect(a, { psk: PSK }),
    Session.accept(b, { psk: PSK }),
  ]);
  const source = client.openStream(Priority.MEMORY);
  // The OPEN arrives with the first bytes; the destination accepts the stream from them.
  const sourceEnd = fakeQemu();
  const destinationEnd = fakeQemu();
  return {
    a,
    /** Tunnel options for the source (client) or destination (server) side. */
    options: (side: Session) => ({ codec, codecs, linkClosed: side.closed }),
    client,
    server,
    source,
    sourceEnd,
    destinationEnd,
    async accept() {
      const stream = await within("the memory stream", server.acceptStream());
      assert.ok(stream, "no stream was accepted");
      assert.equal(stream.priority, Priority.MEMORY);
      return stream;
    },
    close() {
      client.abort();
      server.abort();
    },
  };
}

/** Seeded migration-like data: runs of zeros, of a repeated page, and random bytes. */
function migrationData(prng: Prng, bytes: number): Uint8Array {
  const data = new Uint8Array(bytes);
  const page = prng.fill(new Uint8Array(4096));
  for (let at = 0; at < bytes;) {
    const n = Math.min(bytes - at, 4096 * (1 + prng.int(16)));
    const kind = prng.int(3);
    if (kind === 1) { for (let i = 0; i < n; i += 4096) data.set(page.subarray(0, n - i), at + i); }
    if (kind === 2) data.set(prng.fill(new Uint8Array(n)), at);
    at += n;
  }
  return data;
}

/** Writes `data` in seeded pieces (one larger than a record), then closes unless told not to. */
async function writePieces(
  prng: Prng,
  writable: WritableStream<Uint8Array>,
  data: Uint8Array,
  close = true,
): Promise<void> {
  const writer = writable.getWriter();
  let first = true;
  for (let at = 0; at < data.length;) {
    const n = first
      ? Math.min(data.length, MAX_TUNNEL_CHUNK_BYTES * 2 + 123)
      : 1 + prng.int(Math.min(data.length - at, 100_000));
    first = false;
    await writer.write(data.slice(at, at + n));
    at += n;
  }
  if (close) await writer.close();
  writer.releaseLock();
}

seededTest(
  "memory tunnel: both directions arrive intact, compressed, and end cleanly; the end of sending is told",
  async (prng) => {
    const l = await link();
    try {
      const data = migrationData(prng, 3 * 1024 * 1024);
      const returnPath = prng.fill(new Uint8Array(5000));
      let sendEnds = 0;
      const sending = runMemoryTunnel(l.sourceEnd.end, l.source, {
        ...l.options(l.client),
        onSendEnded: () => sendEnds++,
      });
      const written = writePieces(prng, l.sourceEnd.writable, data);
      const stream = await l.accept();
      const receiving = runMemoryTunnel(l.destinationEnd.end, stream, l.options(l.server));
      const answer = writePieces(prng, l.destinationEnd.writable, returnPath);
      const [got, back] = await within(
        "the transfer",
        Promise.all([readAll(l.destinationEnd.readable), readAll(l.sourceEnd.readable)]),
      );
      await Promise.all([written, answer]);
      const [sent, received] = await within("the tunnels", Promise.all([sending, receiving]));
      assertBytesEqual(got, data, "the data");
      assertBytesEqual(back, returnPath, "the return path");
      assert.equal(sent.sentRawBytes, data.length);
      assert.equal(received.receivedRawBytes, data.length);
      assert.equal(received.receivedWireBytes, sent.sentWireBytes);
      assert.equal(sent.receivedRawBytes, returnPath.length);
      assert.equal(sendEnds, 1, "the end of sending is told once");
      for (const at of [sent.sendEndedAtMs, received.receiveEndedAtMs]) {
        assert.ok(at > 0 && at <= Date.now(), `an end time on the wall clock: ${at}`);
      }
      assert.ok(
        sent.sentWireBytes < data.length * 0.8,
        `compressible data: ${sent.sentWireBytes} bytes on the wire for ${data.length}`,
      );
    } finally {
      l.close();
    }
  },
);

seededTest(
  "memory tunnel: a link cut mid-transfer aborts both ends with MIGRATION_ABORTED",
  async (prng) => {
    const l = await link();
    try {
      const data = migrationData(prng, 4 * 1024 * 1024);
      const sending = runMemoryTunnel(l.sourceEnd.end, l.source, l.options(l.client));
      sending.catch(() => {});
      const written = writePieces(prng, l.sourceEnd.writable, data);
      written.catch(() => {});
      const stream = await l.accept();
      const receiving = runMemoryTunnel(l.destinationEnd.end, stream, l.options(l.server));
      receiving.catch(() => {});
      // The destination QEMU reads until the cut; what is still on its way is lost with the link.
      let got = 0;
      const cutAfter = 1 + prng.int(data.length / 2);
      let release!: () => void;
      const held = new Promise<void>((r) => release = r);
      const drained = l.destinationEnd.readable.pipeTo(
        new WritableStream({
          write: async (chunk) => {
            got += chunk.length;
            if (got >= cutAfter) await held;
          },
        }),
      );
      drained.catch(() => {});
      const deadline = Date.now() + 10_000;
      while (got < cutAfter) {
        assert.ok(Date.now() < deadline, `only ${got} bytes arrived before the cut`);
        await new Promise((r) => setTimeout(r, 1));
      }
      l.a.close();
      await within("the source tunnel", assertRejectsCode(sending, ErrorCode.MIGRATION_ABORTED));
      await within(
        "the destination tunnel",
        assertRejectsCode(receiving, ErrorCode.MIGRATION_ABORTED),
      );
      release();
      assert.ok(got < data.length, `all ${got} bytes arrived before the cut`);
      // Both QEMU ends see the failure (no end waits forever for bytes that will not come).
      await within("the destination QEMU's read", assert.rejects(drained));
      await within("the source QEMU's read", assert.rejects(readAll(l.sourceEnd.readable)));
    } finally {
      l.close();
    }
  },
);

seededTest(
  "memory tunnel: the source QEMU failing resets the stream; the peer aborts; no end of sending is told",
  async (prng) => {
    const l = await link();
    try {
      let sendEnds = 0;
      const sending = runMemoryTunnel(l.sourceEnd.end, l.source, {
        ...l.options(l.client),
        onSendEnded: () => sendEnds++,
      });
      const writer = l.sourceEnd.writable.getWriter();
      await writer.write(migrationData(prng, 200_000));
      const stream = await l.accept();
      const receiving = runMemoryTunnel(l.destinationEnd.end, stream, l.options(l.server));
      await within("the first bytes", l.destinationEnd.readable.getReader().read());
      await writer.abort(new Error("qemu exited"));
      const err = await within(
        "the source",
        assertRejectsCode(sending, ErrorCode.MIGRATION_ABORTED),
      );
      assert.match(err.message, /qemu exited/);
      assert.equal(sendEnds, 0, "a send that failed is not told as ended");
      await within("the peer", assertRejectsCode(receiving, ErrorCode.MIGRATION_ABORTED));
    } finally {
      l.close();
    }
  },
);

/** Sends `bytes` as they are on a memory stream, against a destination tunnel. */
async function destinationGets(bytes: Uint8Array, fin: boolean): Promise<PresyncError> {
  const l = await link();
  try {
    const writer = l.source.writable.getWriter();
    await writer.write(bytes);
    if (fin) await writer.close();
    const stream = await l.accept();
    const receiving = runMemoryTunnel(l.destinationEnd.end, stream, l.options(l.server));
    l.destinationEnd.readable.pipeTo(new WritableStream()).catch(() => {});
    return await within(
      "the malformed record",
      assertRejectsCode(receiving, ErrorCode.MIGRATION_ABORTED),
    );
  } finally {
    l.close();
  }
}

Deno.test("memory tunnel: a record longer than the bound is refused before it is buffered", async () => {
  const err = await destinationGets(new Uint8Array([0xff, 0xff, 0xff, 0xf0, 1, 2, 3]), false);
  assert.equal((err.cause as PresyncError).code, ErrorCode.FRAME_TOO_LARGE);
});

Deno.test("memory tunnel: a stream ending inside a record is malformed", async () => {
  const err = await destinationGets(new Uint8Array([0, 0, 0, 100, 2, 0, 0]), true);
  assert.equal((err.cause as PresyncError).code, ErrorCode.FRAME_MALFORMED);
});

seededTest(
  "memory tunnel: a corrupt compressed record is malformed, never written out",
  async (prng) => {
    // A zstd record (kind 2) of 1000 raw bytes whose payload is noise.
    const payload = prng.fill(new Uint8Array(64));
    const record = new Uint8Array(4 + 5 + payload.length);
    const view = new DataView(record.buffer);
    view.setUint32(0, 5 + payload.length);
    record[4] = 2;
    view.setUint32(5, 1000);
    record.set(payload, 9);
    const err = await destinationGets(record, true);
    assert.equal((err.cause as PresyncError).code, ErrorCode.FRAME_MALFORMED);
  },
);

seededTest("memory tunnel: aborting the signal ends both directions at once", async (prng) => {
  const l = await link();
  try {
    const stop = new AbortController();
    const sending = runMemoryTunnel(l.sourceEnd.end, l.source, {
      ...l.options(l.client),
      signal: stop.signal,
    });
    const written = writePieces(prng, l.sourceEnd.writable, migrationData(prng, 100_000), false);
    await within("the write", written);
    stop.abort(new Error("switchover failed"));
    const err = await within("the abort", assertRejectsCode(sending, ErrorCode.MIGRATION_ABORTED));
    assert.match(err.message, /switchover failed/);
    await within("the QEMU end", assert.rejects(readAll(l.sourceEnd.readable)));
  } finally {
    l.close();
  }
});

seededTest(
  "memory tunnel: a link cut while the local end is idle still aborts the tunnel",
  async (prng) => {
    const l = await link();
    try {
      const data = migrationData(prng, 100_000);
      const sending = runMemoryTunnel(l.sourceEnd.end, l.source, l.options(l.client));
      sending.catch(() => {});
      await writePieces(prng, l.sourceEnd.writable, data);
      const stream = await l.accept();
      const receiving = runMemoryTunnel(l.destinationEnd.end, stream, l.options(l.server));
      // Everything arrived and ended; the destination QEMU has said nothing and not closed.
      assertBytesEqual(
        await within("the data", readAll(l.destinationEnd.readable)),
        data,
        "the data",
      );
      l.a.close();
      await within("the idle tunnel", assertRejectsCode(receiving, ErrorCode.MIGRATION_ABORTED));
    } finally {
      l.close();
    }
  },
);

/** Reads `readable` to its end in the background, counting what arrived so far. */
function collect(readable: ReadableStream<Uint8Array>) {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  const done = readable.pipeTo(
    new WritableStream({
      write(chunk) {
        chunks.push(chunk);
        bytes += chunk.length;
      },
    }),
  );
  done.catch(() => {});
  return {
    done,
    get bytes() {
      return bytes;
    },
    all: () => {
      const out = new Uint8Array(bytes);
      let at = 0;
      for (const c of chunks) out.set(c, (at += c.length) - c.length);
      return out;
    },
  };
}

/** Polls `condition` every millisecond until it holds, failing after 10 s. */
async function until(what: string, condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `${what}: still not after 10 s`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

seededTest(
  "memory tunnel: the receiver holds the last record back until beforeEnd resolves (a destination QEMU cannot complete before its disk's switchover)",
  async (prng) => {
    const l = await link();
    try {
      const data = migrationData(prng, 1024 * 1024);
      const sending = runMemoryTunnel(l.sourceEnd.end, l.source, l.options(l.client));
      const written = writePieces(prng, l.sourceEnd.writable, data);
      const stream = await l.accept();
      const switched = Promise.withResolvers<void>();
      let asked = 0;
      const receiving = runMemoryTunnel(l.destinationEnd.end, stream, {
        ...l.options(l.server),
        beforeEnd: () => {
          asked++;
          return switched.promise;
        },
      });
      await l.destinationEnd.writable.close();
      const got = collect(l.destinationEnd.readable);
      await until("beforeEnd asked at the stream's end", () => asked === 1);
      await written;
      assert.ok(got.bytes < data.length, "the last record went out before the switchover");
      assert.ok(
        got.bytes >= data.length - MAX_TUNNEL_CHUNK_BYTES,
        `more than one record held back: ${got.bytes} of ${data.length} bytes arrived`,
      );
      switched.resolve();
      await within("the end", got.done);
      assertBytesEqual(got.all(), data, "the data");
      await within("the tunnels", Promise.all([sending, receiving]));
    } finally {
      l.close();
    }
  },
);

seededTest(
  "memory tunnel: beforeEnd failing aborts the receiver; the destination QEMU never sees the stream's end",
  async (prng) => {
    const l = await link();
    try {
      const data = migrationData(prng, 512 * 1024);
      const sending = runMemoryTunnel(l.sourceEnd.end, l.source, l.options(l.client));
      sending.catch(() => {});
      const written = writePieces(prng, l.sourceEnd.writable, data);
      const stream = await l.accept();
      const receiving = runMemoryTunnel(l.destinationEnd.end, stream, {
        ...l.options(l.server),
        beforeEnd: () => Promise.reject(new PresyncError(ErrorCode.TIMEOUT, "no switchover")),
      });
      const got = collect(l.destinationEnd.readable);
      await written;
      const err = await within(
        "the receiver",
        assertRejectsCode(receiving, ErrorCode.MIGRATION_ABORTED),
      );
      assert.match(err.message, /no switchover/);
      await within("the destination QEMU's read", assert.rejects(got.done));
      assert.ok(got.bytes < data.length, "the whole stream arrived without a switchover");
    } finally {
      l.close();
    }
  },
);
