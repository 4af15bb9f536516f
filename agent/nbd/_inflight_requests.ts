/**
 * How a request touches the export, for ordering: `read` (READ, BLOCK_STATUS), `write`
 * (WRITE, WRITE_ZEROES, TRIM), `flush` (FLUSH) or `none` (CACHE, requests refused before they
 * touch anything).
 */
export type Access = "read" | "write" | "flush" | "none";

/** One admitted request: what it must wait for, and how to say it is finished. */
export interface InflightSlot {
  /** Earlier requests of the connection that must finish before this one may start. */
  readonly after: Promise<void>[];
  /** Marks the request finished (its reply written or abandoned). Idempotent. */
  finish(): void;
}

interface Entry {
  access: Access;
  start: number;
  end: number;
  bytes: number;
  done: Promise<void>;
}

/**
 * The requests of one connection that are admitted and not yet finished: which earlier ones
 * a new request must wait for, and a bound on how many (and how many data bytes) there may be
 * so that a client cannot make the server hold unbounded memory. Pure bookkeeping; no I/O.
 *
 * Ordering rules (more conservative than the NBD specification, which lets a server run
 * overlapping requests in any order): a read waits for earlier overlapping writes; a write
 * waits for earlier overlapping reads and writes; a FLUSH waits for every earlier write, so
 * it covers all writes received before it. Everything else runs concurrently.
 *
 * @example
 * ```ts
 * const inflight = new InflightRequests(16, 32 * 2 ** 20);
 * await inflight.room(4096);
 * const write = inflight.add("write", 0, 4096, 4096);
 * const read = inflight.add("read", 1000, 10, 10);
 * console.assert(read.after.length === 1); // the read waits for the overlapping write
 * write.finish();
 * read.finish();
 * ```
 */
export class InflightRequests {
  readonly maxRequests: number;
  readonly maxBytes: number;
  readonly #entries = new Set<Entry>();
  #bytes = 0;
  #waiters: (() => void)[] = [];

  /** At most `maxRequests` requests and `maxBytes` data bytes (a larger lone one may run). */
  constructor(maxRequests: number, maxBytes: number) {
    if (!(maxRequests >= 1) || !(maxBytes >= 0)) {
      throw new RangeError(
        `InflightRequests needs maxRequests >= 1 and maxBytes >= 0: received ${maxRequests}, ` +
          `${maxBytes}`,
      );
    }
    this.maxRequests = maxRequests;
    this.maxBytes = maxBytes;
  }

  /** Requests admitted and not finished. */
  get count(): number {
    return this.#entries.size;
  }

  /** Data bytes (write payloads, read buffers) held by those requests. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether a request holding `bytes` data bytes may be admitted now. */
  hasRoom(bytes: number): boolean {
    if (this.#entries.size === 0) return true;
    return this.#entries.size < this.maxRequests && this.#bytes + bytes <= this.maxBytes;
  }

  /** Resolves once {@linkcode hasRoom} holds for `bytes`. */
  async room(bytes: number): Promise<void> {
    while (!this.hasRoom(bytes)) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** Resolves once every admitted request has finished. */
  async drained(): Promise<void> {
    while (this.#entries.size > 0) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Admits a request touching `[offset, offset + length)`; see the class's ordering rules. */
  add(access: Access, offset: number, length: number, bytes: number): InflightSlot {
    const start = offset, end = offset + length;
    const after: Promise<void>[] = [];
    for (const e of this.#entries) {
      if (mustWait(access, start, end, e)) after.push(e.done);
    }
    let resolve!: () => void;
    const entry: Entry = {
      access,
      start,
      end,
      bytes,
      done: new Promise<void>((r) => (resolve = r)),
    };
    this.#entries.add(entry);
    this.#bytes += bytes;
    const finish = () => {
      if (!this.#entries.delete(entry)) return;
      this.#bytes -= bytes;
      resolve();
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const wake of waiters) wake();
    };
    return { after, finish };
  }
}

function mustWait(access: Access, start: number, end: number, earlier: Entry): boolean {
  switch (access) {
    case "flush":
      return earlier.access === "write";
    case "read":
      return earlier.access === "write" && overlaps(start, end, earlier);
    case "write":
      return (earlier.access === "write" || earlier.access === "read") &&
        overlaps(start, end, earlier);
    case "none":
      return false;
  }
}

function overlaps(start: number, end: number, e: Entry): boolean {
  return start < e.end && e.start < end;
}
