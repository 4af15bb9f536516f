import { ErrorCode, PresyncError } from "../errors.ts";
import { ChunkReader } from "../wire/mod.ts";

/**
 * Exact-length reads over a byte stream, NBD's way: `read(n)` resolves with exactly `n`
 * bytes, or null when the stream ended cleanly before the first of them; a stream that ends
 * in the middle of a message is `CONNECTION_LOST`. The buffering is the session layer's
 * {@linkcode ChunkReader} (a read inside one received chunk is not copied).
 */
export class ByteReader {
  readonly #reader: ChunkReader;

  constructor(readable: ReadableStream<Uint8Array>) {
    this.#reader = new ChunkReader(readable.getReader(), new Uint8Array(0));
  }

  /** Bytes received and not yet consumed: a `read` of at most this many will not wait. */
  get buffered(): number {
    return this.#reader.buffered;
  }

  /** Exactly `n` bytes, or null at a clean end of stream; throws when it ends mid-way. */
  async read(n: number): Promise<Uint8Array | null> {
    if (n === 0) return new Uint8Array(0);
    const bytes = await this.#reader.read(n);
    if (bytes !== null) return bytes;
    if (this.#reader.buffered === 0) return null;
    throw new PresyncError(
      ErrorCode.CONNECTION_LOST,
      `NBD peer closed the connection in the middle of a message (${this.#reader.buffered} of ` +
        `${n} bytes received)`,
      { retryable: true },
    );
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
  cancel(): Promise<void> {
    this.#reader.cancel();
    return Promise.resolve();
  }
}
