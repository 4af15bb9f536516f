/**
 * Reads exact byte counts from a stream reader without copying when a record lies inside
 * one received chunk (the stripe's chunk headers and payloads). Starts with `leftover`, the
 * bytes a handshake read beyond its last record.
 */
export class ChunkReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>, leftover: Uint8Array) {
    this.#reader = reader;
    if (leftover.length > 0) {
      this.#chunks.push(leftover);
      this.#buffered = leftover.length;
    }
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Resolves with exactly `n` bytes, or null when the stream ended first (the bytes that did
   * arrive stay in {@linkcode ChunkReader.buffered}). Errors of the stream propagate.
   */
  async read(n: number): Promise<Uint8Array | null> {
    while (this.#buffered < n) {
      const result = await this.#reader.read();
      if (result.done) return null;
      if (result.value.length === 0) continue;
      this.#chunks.push(result.value);
      this.#buffered += result.value.length;
    }
    const head = this.#chunks[0];
    if (head.length >= n) {
      const out = head.subarray(0, n);
      if (head.length === n) this.#chunks.shift();
      else this.#chunks[0] = head.subarray(n);
      this.#buffered -= n;
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const part = this.#chunks[0];
      const take = Math.min(part.length, n - filled);
      out.set(part.subarray(0, take), filled);
      filled += take;
      if (take === part.length) this.#chunks.shift();
      else this.#chunks[0] = part.subarray(take);
    }
    this.#buffered -= n;
    return out;
  }

  /** Reads and discards everything up to the end of the stream; never throws. */
  async drain(): Promise<void> {
    this.#chunks = [];
    this.#buffered = 0;
    try {
      while (!(await this.#reader.read()).done);
    } catch { /* a reset is an end too */ }
  }

  /** Stops reading: cancels the underlying stream. Never throws. */
  cancel(): void {
    this.#reader.cancel().catch(() => {});
  }
}
