import { ErrorCode, PresyncError } from "../errors.ts";

/**
 * Reads exact byte counts from a stream reader (the fixed-size handshake records) and hands
 * over whatever arrived beyond them, so the frame decoder starts at the right byte.
 */
export class ExactReader {
  /** The wrapped reader. */
  readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer: Uint8Array = new Uint8Array(0);
  /** Bytes received so far, in all. */
  received = 0;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>) {
    this.reader = reader;
  }

  /**
   * Resolves with exactly `n` bytes.
   *
   * @throws {PresyncError} `CONNECTION_LOST` when the stream ends or fails first
   */
  async read(n: number, what: string): Promise<Uint8Array> {
    while (this.#buffer.length < n) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await this.reader.read();
      } catch (error) {
        throw new PresyncError(
          ErrorCode.CONNECTION_LOST,
          `connection failed while waiting for the ${what}: ${error}`,
          { cause: error, retryable: true },
        );
      }
      if (result.done) {
        throw new PresyncError(
          ErrorCode.CONNECTION_LOST,
          `connection closed by the peer while waiting for the ${what} ` +
            `(${n} bytes expected, ${this.#buffer.length} received)`,
          { retryable: true },
        );
      }
      this.received += result.value.length;
      const joined = new Uint8Array(this.#buffer.length + result.value.length);
      joined.set(this.#buffer);
      joined.set(result.value, this.#buffer.length);
      this.#buffer = joined;
    }
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }

  /** Returns and forgets the bytes read beyond the last `read`. */
  takeLeftover(): Uint8Array {
    const out = this.#buffer;
    this.#buffer = new Uint8Array(0);
    return out;
  }
}
