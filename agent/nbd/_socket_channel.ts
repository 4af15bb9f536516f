/** What {@linkcode ByteReader} reads from: a stream reader, or direct socket reads. */
export interface ChunkSource {
  read(): Promise<ReadableStreamReadResult<Uint8Array>>;
  cancel(): Promise<void>;
}

/** What replies are written to: a stream writer, or direct socket writes. */
export interface ByteSink {
  /** Resolves once all of `chunk` is written. */
  write(chunk: Uint8Array): Promise<void>;
  /** Ends the writing side; never used again after. */
  close(): Promise<void>;
}

/** Bytes of one receive buffer; each read takes the rest of it until less than the minimum. */
const SLAB_BYTES = 256 * 1024;
const MIN_READ_BYTES = 16 * 1024;

/**
 * A socket read and written with direct ops (`Deno.Conn.read`/`write`, one syscall each),
 * without the Web Streams queue and its promise hops per chunk: at queue depth 1 each
 * request is one read and one write, so those hops are a visible share of its latency.
 * Reads fill consecutive pieces of a shared slab, so a received chunk is never copied and
 * a 28-byte request does not cost a fresh buffer. `cancel()` ends a pending read at once;
 * the socket itself is closed by its owner.
 */
export class SocketChannel implements ChunkSource, ByteSink {
  readonly #conn: Deno.Conn;
  #slab = new Uint8Array(0);
  #cancelled = false;
  #onCancel: (() => void) | null = null;
  readonly #cancelledRead: Promise<ReadableStreamReadResult<Uint8Array>>;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#cancelledRead = new Promise((resolve) => {
      this.#onCancel = () => resolve({ done: true, value: undefined });
    });
  }

  read(): Promise<ReadableStreamReadResult<Uint8Array>> {
    if (this.#cancelled) return Promise.resolve({ done: true, value: undefined });
    if (this.#slab.length < MIN_READ_BYTES) this.#slab = new Uint8Array(SLAB_BYTES);
    const into = this.#slab;
    const read = this.#conn.read(into).then((n): ReadableStreamReadResult<Uint8Array> => {
      if (n === null) return { done: true, value: undefined };
      this.#slab = into.subarray(n);
      return { done: false, value: into.subarray(0, n) };
    });
    // After a cancel the read fails when the owner closes the socket; nobody waits for it.
    read.catch(() => {});
    return Promise.race([read, this.#cancelledRead]);
  }

  cancel(): Promise<void> {
    this.#cancelled = true;
    this.#onCancel?.();
    return Promise.resolve();
  }

  async write(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length;) at += await this.#conn.write(chunk.subarray(at));
  }

  async close(): Promise<void> {
    await (this.#conn as Deno.UnixConn).closeWrite();
  }
}
