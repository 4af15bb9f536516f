import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { ByteReader } from "./_byte_reader.ts";
import * as C from "./nbd_constants.ts";
import type { NbdExport } from "./nbd_export.ts";
import { MAX_INFLIGHT_BYTES, MAX_INFLIGHT_REQUESTS, serveNbdConnection } from "./nbd_connection.ts";
import { encodeExportRequest, encodeOption, parseOptionReplyHeader } from "./option_codec.ts";
import { decodeReplyHeader } from "./reply_codec.ts";
import { encodeRequest } from "./request_codec.ts";

const SIZE = 64 * 1024 * 1024;

/** Polls `check` until it holds; fails after `timeoutMs`. */
async function waitUntil(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/**
 * A memory export that logs each call's start and end and can hold calls of one kind
 * (`read`, `write`, `flush`) or at one place (`read@0`) until released.
 */
class GatedExport implements NbdExport {
  readonly name = "mem";
  readonly sizeBytes = SIZE;
  readonly readOnly = false;
  readonly bytes = new Uint8Array(SIZE);
  readonly log: string[] = [];
  active = 0;
  maxActive = 0;
  activeBytes = 0;
  maxActiveBytes = 0;
  calls = 0;
  readonly #holds = new Map<string, { promise: Promise<void>; release: () => void }>();

  hold(key: string): void {
    let release!: () => void;
    const promise = new Promise<void>((resolve) => (release = resolve));
    this.#holds.set(key, { promise, release });
  }

  release(key: string): void {
    this.#holds.get(key)?.release();
    this.#holds.delete(key);
  }

  async #op<T>(kind: string, offset: number, bytes: number, fn: () => T): Promise<T> {
    const label = kind === "flush" ? kind : `${kind}@${offset}`;
    this.calls++;
    this.active++;
    this.activeBytes += bytes;
    this.maxActive = Math.max(this.maxActive, this.active);
    this.maxActiveBytes = Math.max(this.maxActiveBytes, this.activeBytes);
    this.log.push(`${label} start`);
    const hold = this.#holds.get(label) ?? this.#holds.get(kind);
    if (hold) await hold.promise;
    this.log.push(`${label} end`);
    this.active--;
    this.activeBytes -= bytes;
    return fn();
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#op("read", offset, length, () => this.bytes.slice(offset, offset + length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#op("write", offset, data.length, () => this.bytes.set(data, offset));
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#op("write", offset, 0, () => void this.bytes.fill(0, offset, offset + length));
  }

  trim(): Promise<void> {
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return this.#op("flush", 0, 0, () => {});
  }
}

/**
 * One client session over in-memory streams, simple replies. `blockReplies()` makes the
 * server's socket writes stall (a client that does not read); `pulledBytes` counts what the
 * server has taken from the client's stream.
 */
class Session {
  readonly ex = new GatedExport();
  readonly served: Promise<void>;
  pulledBytes = 0;
  /** Errors the server reported (none in a clean session). */
  readonly errors: unknown[] = [];
  readonly #input: Uint8Array[] = [];
  #inputWaiter: (() => void) | null = null;
  #inputClosed = false;
  readonly #output: Uint8Array[] = [];
  #outputWaiter: (() => void) | null = null;
  #block: { promise: Promise<void>; release: () => void } | null = null;
  readonly #replies: ByteReader;
  readonly #readLengths = new Map<bigint, number>();

  readonly #pieceBytes: number;

  /** `pieceBytes`: the client's bytes reach the server in pieces of at most this size. */
  constructor(pieceBytes = 64 * 1024) {
    this.#pieceBytes = pieceBytes;
    const readable = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        while (this.#input.length === 0 && !this.#inputClosed) {
          await new Promise<void>((resolve) => (this.#inputWaiter = resolve));
        }
        const chunk = this.#input.shift();
        if (!chunk) return controller.close();
        this.pulledBytes += chunk.length;
        controller.enqueue(chunk);
      },
    }, { highWaterMark: 0 });
    const writable = new WritableStream<Uint8Array>({
      write: async (chunk) => {
        while (this.#block) await this.#block.promise;
        this.#output.push(chunk.slice());
        this.#outputWaiter?.();
      },
    });
    this.#replies = new ByteReader(
      new ReadableStream<Uint8Array>({
        pull: async (controller) => {
          while (this.#output.length === 0) {
            await new Promise<void>((resolve) => (this.#outputWaiter = resolve));
          }
          controller.enqueue(this.#output.shift()!);
        },
      }, { highWaterMark: 0 }),
    );
    this.served = serveNbdConnection({ readable, writable }, new Map([["mem", this.ex]]), {
      onError: (err) => this.errors.push(err),
    });
  }

  /** Client flags and `NBD_OPT_GO`; reads the greeting and the option replies. */
  async handshake(): Promise<void> {
    this.send(new Uint8Array([0, 0, 0, C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES]));
    this.send(encodeOption(C.NBD_OPT_GO, encodeExportRequest("mem", [])));
    await this.#replies.readExact(18, "greeting");
    while (true) {
      const header = parseOptionReplyHeader(await this.#replies.readExact(20, "option reply"));
      await this.#replies.readExact(header.length, "option reply data");
      if (header.type === C.NBD_REP_ACK) return;
    }
  }

  /** Sends bytes to the server. */
  send(bytes: Uint8Array): void {
    for (let at = 0; at < bytes.length; at += this.#pieceBytes) {
      this.#input.push(bytes.subarray(at, at + this.#pieceBytes));
    }
    this.#inputWaiter?.();
  }

  request(type: number, cookie: number, offset: number, length: number, data?: Uint8Array) {
    if (type === C.NBD_CMD_READ) this.#readLengths.set(BigInt(cookie), length);
    const header = encodeRequest(type, 0, BigInt(cookie), offset, length);
    if (!data) return this.send(header);
    const both = new Uint8Array(header.length + data.length);
    both.set(header);
    both.set(data, header.length);
    this.send(both);
  }

  /** The next reply: its cookie, error and (for a successful READ) data. */
  async reply(): Promise<{ cookie: number; error: number; data?: Uint8Array }> {
    const header = decodeReplyHeader(await this.#replies.readExact(16, "a reply"));
    assert.equal(header.kind, "simple");
    if (header.kind !== "simple") throw new Error("unreachable");
    const length = this.#readLengths.get(header.cookie);
    this.#readLengths.delete(header.cookie);
    const data = length !== undefined && header.error === 0
      ? await this.#replies.readExact(length, "read data")
      : undefined;
    return { cookie: Number(header.cookie), error: header.error, data };
  }

  blockReplies(): void {
    let release!: () => void;
    const promise = new Promise<void>((resolve) => (release = resolve));
    this.#block = { promise, release };
  }

  unblockReplies(): void {
    this.#block?.release();
    this.#block = null;
  }

  /** Sends DISC, ends the client's stream and waits for the server to finish. */
  async disconnect(): Promise<void> {
    this.request(C.NBD_CMD_DISC, 0, 0, 0);
    this.#inputClosed = true;
    this.#inputWaiter?.();
    await this.served;
    assert.deepEqual(this.errors, []);
  }
}

Deno.test("replies come as requests finish, matched by cookie: a held read does not hold back a later one", async () => {
  const s = new Session();
  await s.handshake();
  s.ex.bytes.fill(5, 0, 4096);
  s.ex.hold("read@0");
  s.request(C.NBD_CMD_READ, 1, 0, 4096);
  s.request(C.NBD_CMD_READ, 2, 8192, 4096);
  const first = await s.reply();
  assert.equal(first.cookie, 2);
  assertBytesEqual(first.data, new Uint8Array(4096), "the first reply");
  s.ex.release("read@0");
  const second = await s.reply();
  assert.equal(second.cookie, 1);
  assertBytesEqual(second.data, new Uint8Array(4096).fill(5), "the second reply");
  await s.disconnect();
});

Deno.test("a read overlapping an earlier write waits for it and sees its bytes; a FLUSH waits for every earlier write", async () => {
  const s = new Session();
  await s.handshake();
  s.ex.hold("write@0");
  s.request(C.NBD_CMD_WRITE, 1, 0, 4096, new Uint8Array(4096).fill(7));
  s.request(C.NBD_CMD_READ, 2, 1000, 10);
  s.request(C.NBD_CMD_READ, 3, 65536, 4096);
  s.request(C.NBD_CMD_FLUSH, 4, 0, 0);
  s.request(C.NBD_CMD_WRITE, 5, 1 << 20, 4, new Uint8Array(4).fill(9));
  const early = [await s.reply(), await s.reply()].map((r) => r.cookie).sort();
  assert.deepEqual(early, [3, 5], "the independent read and write are not held up");
  assert.ok(!s.ex.log.includes("flush start"));
  s.ex.release("write@0");
  const late = new Map<number, Uint8Array | undefined>();
  for (let i = 0; i < 3; i++) {
    const r = await s.reply();
    assert.equal(r.error, 0);
    late.set(r.cookie, r.data);
  }
  assert.deepEqual([...late.keys()].sort(), [1, 2, 4]);
  assert.deepEqual(late.get(2), new Uint8Array(10).fill(7));
  const at = (entry: string) => s.ex.log.indexOf(entry);
  assert.ok(at("write@0 end") < at("read@1000 start"), s.ex.log.join(", "));
  assert.ok(at("write@0 end") < at("flush start"), s.ex.log.join(", "));
  assert.ok(at("write@1048576 end") < at("flush start"), s.ex.log.join(", "));
  await s.disconnect();
});

Deno.test("requests in flight are bounded in number and in data bytes", async () => {
  const s = new Session();
  await s.handshake();
  s.ex.hold("read");
  const reads = 3 * MAX_INFLIGHT_REQUESTS;
  for (let i = 0; i < reads; i++) s.request(C.NBD_CMD_READ, i, i * 4096, 4096);
  await waitUntil(
    "the server holds a full window of reads",
    () => s.ex.active === MAX_INFLIGHT_REQUESTS,
  );
  s.ex.release("read");
  const cookies = new Set<number>();
  for (let i = 0; i < reads; i++) cookies.add((await s.reply()).cookie);
  assert.equal(cookies.size, reads);
  assert.equal(s.ex.maxActive, MAX_INFLIGHT_REQUESTS);

  s.ex.hold("write");
  const writeBytes = 4 * 1024 * 1024;
  const writes = SIZE / writeBytes;
  const data = new Uint8Array(writeBytes).fill(1);
  for (let i = 0; i < writes; i++) {
    s.request(C.NBD_CMD_WRITE, reads + i, i * writeBytes, writeBytes, data);
  }
  const window = MAX_INFLIGHT_BYTES / writeBytes;
  await waitUntil("the server holds a full window of writes", () => s.ex.active === window);
  s.ex.release("write");
  for (let i = 0; i < writes; i++) assert.equal((await s.reply()).error, 0);
  assert.equal(s.ex.maxActiveBytes, MAX_INFLIGHT_BYTES);
  assertBytesEqual(s.ex.bytes, new Uint8Array(SIZE).fill(1), "the export's bytes");
  await s.disconnect();
});

Deno.test("a client that sends many requests without reading replies is not read from beyond the window; once it reads, every request is answered", async () => {
  const s = new Session(1024);
  await s.handshake();
  const pulledAtStart = s.pulledBytes;
  s.blockReplies();
  const requests = 2000;
  for (let i = 0; i < requests; i++) s.request(C.NBD_CMD_READ, i, (i % 1024) * 4096, 4096);
  await waitUntil("the window is full", () => s.ex.calls === MAX_INFLIGHT_REQUESTS);
  // Replies not written keep their requests in flight: the server stops reading the socket
  // (at most one 1 KiB piece past the window's request headers).
  assert.ok(s.ex.calls <= MAX_INFLIGHT_REQUESTS);
  const windowBytes = (MAX_INFLIGHT_REQUESTS + 1) * C.REQUEST_HEADER_BYTES;
  assert.ok(s.pulledBytes - pulledAtStart <= windowBytes + 1024, `${s.pulledBytes} pulled`);
  s.unblockReplies();
  const seen = new Set<number>();
  for (let i = 0; i < requests; i++) {
    const r = await s.reply();
    assert.equal(r.error, 0);
    seen.add(r.cookie);
  }
  assert.equal(seen.size, requests);
  await s.disconnect();
});

Deno.test("DISC with requests in flight: their replies are sent before the connection ends", async () => {
  const s = new Session();
  await s.handshake();
  s.ex.hold("write");
  s.request(C.NBD_CMD_WRITE, 1, 0, 3, new Uint8Array([1, 2, 3]));
  s.request(C.NBD_CMD_FLUSH, 2, 0, 0);
  const done = s.disconnect();
  await waitUntil("the write started", () => s.ex.active === 1);
  s.ex.release("write");
  await done;
  const cookies = [(await s.reply()).cookie, (await s.reply()).cookie];
  assert.deepEqual(cookies, [1, 2]);
  assert.deepEqual(s.ex.bytes.subarray(0, 3), new Uint8Array([1, 2, 3]));
});
