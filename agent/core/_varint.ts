import { ErrorCode, PresyncError } from "../errors.ts";

/** Longest varint accepted: 5 bytes carry 35 bits, enough for any u32 length or count. */
const MAX_VARINT_BYTES = 5;

/**
 * Reads an unsigned LEB128 varint of at most 32 bits at `pos`. Returns the value and the
 * position after it. Throws BITMAP_MALFORMED naming `what` when truncated or too long.
 */
export function readVarint(data: Uint8Array, pos: number, what: string): [number, number] {
  let value = 0;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos + i >= data.length) {
      throw new PresyncError(
        ErrorCode.BITMAP_MALFORMED,
        `serialized bitmap is malformed: ${what} is truncated at byte ${pos + i}`,
      );
    }
    const byte = data[pos + i];
    value += (byte & 0x7f) * 2 ** (7 * i);
    if ((byte & 0x80) === 0) {
      if (value > 0xffffffff) break;
      return [value, pos + i + 1];
    }
  }
  throw new PresyncError(
    ErrorCode.BITMAP_MALFORMED,
    `serialized bitmap is malformed: ${what} at byte ${pos} does not fit in 32 bits`,
  );
}

/** Builds a byte string of single bytes, varints and byte runs. */
export class VarintWriter {
  #buf = new Uint8Array(64);
  #len = 0;

  /** Bytes written so far. */
  get length(): number {
    return this.#len;
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
    grown.set(this.#buf.subarray(0, this.#len));
    this.#buf = grown;
  }

  /** Appends one byte. */
  byte(value: number): this {
    this.#reserve(1);
    this.#buf[this.#len++] = value;
    return this;
  }

  /** Appends `value` (an integer from 0 to 2^32-1) as an unsigned LEB128 varint. */
  varint(value: number): this {
    this.#reserve(MAX_VARINT_BYTES);
    while (value >= 0x80) {
      this.#buf[this.#len++] = (value & 0x7f) | 0x80;
      value = Math.floor(value / 128);
    }
    this.#buf[this.#len++] = value;
    return this;
  }

  /** Appends raw bytes. */
  bytes(data: Uint8Array): this {
    this.#reserve(data.length);
    this.#buf.set(data, this.#len);
    this.#len += data.length;
    return this;
  }

  /** The bytes written, as a new array. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}
