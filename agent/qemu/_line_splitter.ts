import { ErrorCode, PresyncError } from "../errors.ts";

const NEWLINE = 0x0a;

/**
 * Splits a byte stream into newline-terminated lines of at most `maxLineBytes` bytes (the
 * newline not counted), decoded as UTF-8 with a trailing carriage return dropped. A longer
 * line is a `PROTOCOL_VIOLATION`: a peer cannot make us buffer without limit. Pure.
 */
export class LineSplitter {
  readonly #maxLineBytes: number;
  readonly #decoder = new TextDecoder();
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;

  constructor(maxLineBytes: number) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** The complete lines that `chunk` finishes, in order. */
  push(chunk: Uint8Array): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let at = chunk.indexOf(NEWLINE); at >= 0; at = chunk.indexOf(NEWLINE, start)) {
      this.#append(chunk.subarray(start, at));
      lines.push(this.#take());
      start = at + 1;
    }
    this.#append(chunk.subarray(start));
    return lines;
  }

  /** Bytes of an unfinished line waiting for its newline. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  #append(piece: Uint8Array): void {
    if (piece.length === 0) return;
    this.#pendingBytes += piece.length;
    if (this.#pendingBytes > this.#maxLineBytes) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `QMP peer sent a line longer than ${this.#maxLineBytes} bytes without a newline ` +
          `(${this.#pendingBytes} so far); a QMP monitor sends one JSON object per line`,
      );
    }
    this.#pending.push(piece.slice());
  }

  #take(): string {
    const bytes = new Uint8Array(this.#pendingBytes);
    let at = 0;
    for (const piece of this.#pending) {
      bytes.set(piece, at);
      at += piece.length;
    }
    this.#pending = [];
    this.#pendingBytes = 0;
    const line = this.#decoder.decode(bytes);
    return line.endsWith("\r") ? line.slice(0, -1) : line;
  }
}
