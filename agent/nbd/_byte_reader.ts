import { ErrorCode, PresyncError } from "../errors.ts";

/**
 * Exact-length reads over a byte stream: `read(n)` resolves with exactly `n` bytes, or null
 * when the stream ended cleanly before the first of them; a stream that ends in the middle
 * of a message is `CONNECTION_LOST`.
 */
export class ByteReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;

  constructor(readable: ReadableStream<Uint8Array>) {
    this.#reader = readable.getReader();
  }

  async #fill(n: number): Promise<boolean> {
    while (this.#buffered < n && !this.#ended) {
      const { value, done } = await this.#reader.read();
      if (done) {
        this.#ended = true;
        break;
      }
      if (value.length === 0) continue;
      this.#chunks.push(value);
      this.#buffered += value.length;
    }
    return this.#buffered >= n;
  }

  /** Bytes received and not yet consumed: a `read` of at most this many will not wait. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Exactly `n` bytes, or null at a clean end of stream; throws when it ends mid-way. */
  async read(n: number): Promise<Uint8Array | null> {
    if (n === 0) return new Uint8Array(0);
    if (!(await this.#fill(n))) {
      if (this.#buffered === 0) return null;
      throw new PresyncError(
        ErrorCode.CONNECTION_LOST,
        `NBD peer closed the connection in the middle of a message (${this.#buffered} of ${n} ` +
          `bytes received)`,
        { retryable: true },
      );
    }
    const first = this.#chunks[0];
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return out;
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const chunk = this.#chunks[0];
      const take = Math.min(chunk.length, n - at);
      out.set(chunk.subarray(0, take), at);
      at += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    this.#buffered -= n;
    return out;
  }

  /** Exactly `n` bytes; the end of the stream is `CONNECTION_LOST` here. */
  async readExact(n: number, what: string): Promise<Uint8Array> {
    const bytes = await this.read(n);
    if (bytes === null) {
      throw new PresyncError(
        ErrorCode.CONNECTION_LOST,
        `NBD peer closed the connection while ${what} was expected`,
        { retryable: true },
      );
    }
    return bytes;
  }

  /** Reads and drops `n` bytes, a piece at a time, so memory stays bounded. */
  async skip(n: number, what: string): Promise<void> {
    for (let left = n; left > 0;) {
      const piece = Math.min(left, 1 << 20);
      await this.readExact(piece, what);
      left -= piece;
    }
  }

  /** Stops reading; pending reads reject. Idempotent. */
  async cancel(): Promise<void> {
    try {
      await this.#reader.cancel();
    } catch {
      // Already closed or errored: nothing left to release.
    }
  }
}
