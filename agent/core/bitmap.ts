import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import { alloc, core, EXTENT_BATCH, free, mem, scratch } from "./_wasm.ts";
import { readVarint, VarintWriter } from "./_varint.ts";

/** Largest number of bits a bitmap may have: 2^31 (8 TiB at 4 KiB blocks, 128 TiB at 64 KiB). */
export const MAX_BITMAP_BITS = 2 ** 31;

/** A run of set bits: `[start, length]`, length ≥ 1. */
export type Extent = [start: number, length: number];

/** Serialized encodings (docs/PROTOCOL.md, "Bitmaps"). */
const ENCODING_RAW = 1;
const ENCODING_RUNS = 2;

const registry = new FinalizationRegistry<number>(free);

/** Bytes allocated for `size` bits: whole 16-byte units, so WASM can work a v128 at a time. */
function paddedBytes(size: number): number {
  return Math.max(16, Math.ceil(size / 128) * 16);
}

function malformed(message: string): PresyncError {
  return new PresyncError(ErrorCode.BITMAP_MALFORMED, `serialized bitmap is malformed: ${message}`);
}

/**
 * A set of block numbers `0 … size-1`, stored as bits in WASM memory (bit i is bit `i & 7`
 * of byte `i >> 3`). Set operations, counting and run finding run in WebAssembly.
 * Release it with `free()` or `using`; one garbage collected unreleased is freed then.
 *
 * @example
 * ```ts
 * import { Bitmap } from "./mod.ts";
 * using dirty = new Bitmap(100);
 * dirty.setRange(10, 5);
 * dirty.set(42);
 * console.assert(dirty.popcount() === 6);
 * console.assert(JSON.stringify([...dirty.extents()]) === "[[10,5],[42,1]]");
 * ```
 */
export class Bitmap {
  #ptr: number;
  readonly #size: number;
  readonly #bytes: number;

  /** An empty bitmap of `size` bits. */
  constructor(size: number) {
    assertInteger("bitmap size", size, 0, MAX_BITMAP_BITS);
    this.#size = size;
    this.#bytes = paddedBytes(size);
    this.#ptr = alloc(this.#bytes);
    mem().fill(0, this.#ptr, this.#ptr + this.#bytes);
    registry.register(this, this.#ptr, this);
  }

  /** Number of bits (blocks) in the set's universe. */
  get size(): number {
    return this.#size;
  }

  /**
   * Address of the bits in the WebAssembly core's memory, for the other functions of
   * `agent/core`. Valid until `free()`.
   */
  get wasmPointer(): number {
    return this.#live();
  }

  #live(): number {
    if (this.#ptr === 0) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "bitmap used after free()");
    }
    return this.#ptr;
  }

  #checkIndex(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.#size) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `bit index must be an integer from 0 to ${this.#size - 1}: received ${i}`,
      );
    }
  }

  #checkRange(start: number, length: number): void {
    assertInteger("range start", start, 0, this.#size);
    assertInteger("range length", length, 0, this.#size - start);
  }

  #checkSameSize(other: Bitmap): number {
    if (other.#size !== this.#size) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `bitmaps must have the same size: this has ${this.#size} bits, other has ${other.#size}`,
      );
    }
    return other.#live();
  }

  /** Whether bit `i` is set. */
  get(i: number): boolean {
    this.#checkIndex(i);
    return (mem()[this.#live() + (i >>> 3)] & (1 << (i & 7))) !== 0;
  }

  /** Sets bit `i`. Idempotent. */
  set(i: number): this {
    this.#checkIndex(i);
    mem()[this.#live() + (i >>> 3)] |= 1 << (i & 7);
    return this;
  }

  /** Clears bit `i`. Idempotent. */
  clear(i: number): this {
    this.#checkIndex(i);
    mem()[this.#live() + (i >>> 3)] &= ~(1 << (i & 7));
    return this;
  }

  /** Sets bits `start … start+length-1`. */
  setRange(start: number, length: number): this {
    this.#checkRange(start, length);
    core.bitmapFillRange(this.#live(), start, length, 1);
    return this;
  }

  /** Clears bits `start … start+length-1`. */
  clearRange(start: number, length: number): this {
    this.#checkRange(start, length);
    core.bitmapFillRange(this.#live(), start, length, 0);
    return this;
  }

  /** this = this ∪ other (same size). Returns this. */
  or(other: Bitmap): this {
    const b = this.#checkSameSize(other);
    core.bitmapOr(this.#live(), this.#ptr, b, this.#bytes);
    return this;
  }

  /** this = this ∩ other (same size). Returns this. */
  and(other: Bitmap): this {
    const b = this.#checkSameSize(other);
    core.bitmapAnd(this.#live(), this.#ptr, b, this.#bytes);
    return this;
  }

  /** this = this \ other (same size). Returns this. */
  andNot(other: Bitmap): this {
    const b = this.#checkSameSize(other);
    core.bitmapAndNot(this.#live(), this.#ptr, b, this.#bytes);
    return this;
  }

  /** Number of set bits. */
  popcount(): number {
    return core.bitmapPopcount(this.#live(), this.#bytes) >>> 0;
  }

  /** |this ∩ other| (same size), without a copy of either. */
  countAnd(other: Bitmap): number {
    const b = this.#checkSameSize(other);
    return core.bitmapAndCount(this.#live(), b, this.#bytes) >>> 0;
  }

  /** |this \ other| (same size), without a copy of either. */
  countAndNot(other: Bitmap): number {
    const b = this.#checkSameSize(other);
    return core.bitmapAndNotCount(this.#live(), b, this.#bytes) >>> 0;
  }

  /** True when no bit is set. */
  isEmpty(): boolean {
    return this.popcount() === 0;
  }

  /** True when `other` has the same size and the same bits set. */
  equals(other: Bitmap): boolean {
    if (other.size !== this.#size) return false;
    const b = this.#checkSameSize(other);
    return core.bitmapXorCount(this.#live(), b, this.#bytes) === 0;
  }

  /** Runs of set bits in increasing order, as `[start, length]`, merged when adjacent. */
  *extents(from = 0): Generator<Extent> {
    assertInteger("extent search start", from, 0, this.#size);
    let pos = from;
    while (true) {
      const batch = this.#extentBatch(pos);
      const runs = batch.length / 2;
      for (let r = 0; r < runs; r++) yield [batch[2 * r], batch[2 * r + 1]];
      if (runs < EXTENT_BATCH) return;
      pos = batch[2 * runs - 2] + batch[2 * runs - 1];
    }
  }

  /**
   * All runs of set bits at once, flat: `[start0, length0, start1, length1, …]`. Faster than
   * {@linkcode Bitmap.extents} when there are many runs (no object per run).
   */
  extentPairs(): Uint32Array {
    let out = new Uint32Array(0);
    let pos = 0;
    while (true) {
      const batch = this.#extentBatch(pos);
      const grown = new Uint32Array(out.length + batch.length);
      grown.set(out);
      grown.set(batch, out.length);
      out = grown;
      if (batch.length < EXTENT_BATCH * 2) return out;
      pos = batch[batch.length - 2] + batch[batch.length - 1];
    }
  }

  /** True when every bit of `[start, start + length)` is set (an empty range: true). */
  hasRange(start: number, length: number): boolean {
    this.#checkRange(start, length);
    if (length === 0) return true;
    // The bitmap seen as `start + length` bits: the run found ends at the range's end at most,
    // so the cost follows the range, not the run around it.
    const runs = core.bitmapExtents(this.#live(), start + length, start, scratch.extents, 1);
    if (runs === 0) return false;
    const [first, count] = new Uint32Array(
      mem().slice(scratch.extents, scratch.extents + 8).buffer,
    );
    return first === start && count === length;
  }

  /** Up to EXTENT_BATCH runs from `pos`, copied out of the scratch area. */
  #extentBatch(pos: number): Uint32Array {
    const runs = core.bitmapExtents(this.#live(), this.#size, pos, scratch.extents, EXTENT_BATCH);
    return new Uint32Array(mem().slice(scratch.extents, scratch.extents + runs * 8).buffer);
  }

  /** A copy of this bitmap. */
  clone(): Bitmap {
    const copy = new Bitmap(this.#size);
    mem().copyWithin(copy.#ptr, this.#live(), this.#ptr + this.#bytes);
    return copy;
  }

  /** The bits as `ceil(size / 8)` bytes, in the layout described above. */
  toBytes(): Uint8Array {
    const ptr = this.#live();
    return mem().slice(ptr, ptr + Math.ceil(this.#size / 8));
  }

  /**
   * A bitmap of `size` bits from bytes in the {@linkcode Bitmap.toBytes} layout (for
   * example {@linkcode zeroBlocks} output). Bits at or past `size` must be clear.
   */
  static fromBytes(bytes: Uint8Array, size: number): Bitmap {
    const bitmap = new Bitmap(size);
    if (bytes.length !== Math.ceil(size / 8)) {
      bitmap.free();
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `a bitmap of ${size} bits takes ${Math.ceil(size / 8)} bytes: received ${bytes.length}`,
      );
    }
    if (size % 8 !== 0 && bytes[bytes.length - 1] >> (size % 8) !== 0) {
      bitmap.free();
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `bits at or past the bitmap size ${size} must be clear`,
      );
    }
    mem().set(bytes, bitmap.#ptr);
    return bitmap;
  }

  /**
   * A compact, compression-friendly encoding for the wire and for disk: the list of runs
   * as varint gaps and lengths, or the raw bits when that is shorter.
   */
  serialize(): Uint8Array {
    const runs = new VarintWriter();
    runs.byte(ENCODING_RUNS).varint(this.#size);
    let prevEnd = 0;
    let count = 0;
    const body = new VarintWriter();
    const rawBytes = Math.ceil(this.#size / 8);
    for (const [start, length] of this.extents()) {
      body.varint(start - prevEnd).varint(length);
      prevEnd = start + length;
      count++;
      // Stop early once the run list is no shorter than the raw form.
      if (body.length > rawBytes) break;
    }
    if (body.length <= rawBytes) return runs.varint(count).bytes(body.finish()).finish();
    return new VarintWriter().byte(ENCODING_RAW).varint(this.#size).bytes(this.toBytes()).finish();
  }

  /**
   * Decodes {@linkcode Bitmap.serialize} output, refusing bitmaps larger than `maxBits` (pass
   * the block count you expect: the size is read from untrusted input).
   */
  static deserialize(data: Uint8Array, maxBits: number = MAX_BITMAP_BITS): Bitmap {
    if (data.length < 1) throw malformed("empty input");
    const encoding = data[0];
    let pos = 1;
    const [size, afterSize] = readVarint(data, pos, "size");
    pos = afterSize;
    if (size > maxBits) throw malformed(`size ${size} bits exceeds the limit of ${maxBits}`);
    if (encoding === ENCODING_RAW) {
      const rawBytes = Math.ceil(size / 8);
      if (data.length - pos !== rawBytes) {
        throw malformed(`expected ${rawBytes} bytes of bits, received ${data.length - pos}`);
      }
      if (size % 8 !== 0 && data[data.length - 1] >> (size % 8) !== 0) {
        throw malformed(`bits at or past the size ${size} are set`);
      }
      return Bitmap.fromBytes(data.subarray(pos), size);
    }
    if (encoding !== ENCODING_RUNS) {
      throw malformed(
        `unknown encoding ${encoding} (expected ${ENCODING_RAW} or ${ENCODING_RUNS})`,
      );
    }
    const [count, afterCount] = readVarint(data, pos, "run count");
    pos = afterCount;
    if (count > Math.ceil(size / 2)) throw malformed(`${count} runs cannot fit in ${size} bits`);
    const bitmap = new Bitmap(size);
    try {
      let prevEnd = 0;
      for (let r = 0; r < count; r++) {
        const [gap, afterGap] = readVarint(data, pos, "run gap");
        const [length, afterLength] = readVarint(data, afterGap, "run length");
        pos = afterLength;
        const start = prevEnd + gap;
        if ((r > 0 && gap === 0) || length === 0 || start + length > size) {
          throw malformed(
            `run ${r} [${start}, ${length}] is empty, touches the previous run or ends past ${size}`,
          );
        }
        core.bitmapFillRange(bitmap.#ptr, start, length, 1);
        prevEnd = start + length;
      }
      if (pos !== data.length) throw malformed(`${data.length - pos} bytes after the last run`);
    } catch (err) {
      bitmap.free();
      throw err;
    }
    return bitmap;
  }

  /** Releases the WASM memory. Idempotent; any later use throws. */
  free(): void {
    if (this.#ptr === 0) return;
    registry.unregister(this);
    free(this.#ptr);
    this.#ptr = 0;
  }

  [Symbol.dispose](): void {
    this.free();
  }
}
