import { Bitmap } from "../../agent/core/mod.ts";

/** `pages` within the shared 32-bit slot: at most 2³¹ − 1 (8 TiB of pages), −1 kept. */
function clampPages(pages: number): number {
  return Math.min(pages, 0x7fff_ffff);
}

/** The block count and the page count, ahead of the bits. */
const HEADER_BYTES = 8;

/**
 * A copy of the NBD tracker's live bitmap in shared memory, kept by the thread that runs the
 * tracker (the only writer) and read by another (status on the main thread) without a message
 * round trip: a count of the set's blocks, of their changed 4 KiB pages (−1: not known), and
 * its bits in the {@linkcode Bitmap.toBytes} layout. A reader racing a write sees the set just
 * before or just after it; one racing a cut may see a mix of the old set and the new one for
 * that instant (status takes it as an estimate; cuts never read it).
 *
 * @example
 * ```ts
 * import { DirtyMirror } from "./dirty_mirror.ts";
 * const mirror = new DirtyMirror(100);
 * mirror.mark(10, 3, 3, 48);
 * using blocks = mirror.toBitmap();
 * console.assert(mirror.count() === 3 && mirror.pages() === 48 && blocks.get(11));
 * ```
 */
export class DirtyMirror {
  /** Blocks in the volume. */
  readonly blocks: number;
  /**
   * The shared memory: the block count and the page count (4 bytes each), then the bits. Send
   * it to the other thread.
   */
  readonly buffer: SharedArrayBuffer;
  readonly #counts: Int32Array;
  readonly #bits: Uint8Array;

  /** A mirror of an empty set of `blocks` blocks, or one over `buffer` (another thread's). */
  constructor(blocks: number, buffer?: SharedArrayBuffer) {
    const bytes = HEADER_BYTES + Math.ceil(blocks / 8);
    if (buffer && buffer.byteLength !== bytes) {
      throw new RangeError(
        `a dirty mirror of ${blocks} blocks takes ${bytes} bytes: received ${buffer.byteLength}`,
      );
    }
    this.blocks = blocks;
    this.buffer = buffer ?? new SharedArrayBuffer(bytes);
    this.#counts = new Int32Array(this.buffer, 0, 2);
    this.#bits = new Uint8Array(this.buffer, HEADER_BYTES);
  }

  /** Blocks in the set. */
  count(): number {
    return Atomics.load(this.#counts, 0);
  }

  /** Changed 4 KiB pages of the set's blocks (−1: the tracker keeps no page masks). */
  pages(): number {
    return Atomics.load(this.#counts, 1);
  }

  /**
   * Adds blocks `first … first+length-1`; `count` is the set's size after it, `pages` its
   * changed pages (−1: not known).
   */
  mark(first: number, length: number, count: number, pages: number): void {
    const end = first + length;
    for (let block = first; block < end;) {
      const byte = block >> 3;
      const bit = block & 7;
      const take = Math.min(8 - bit, end - block);
      Atomics.or(this.#bits, byte, ((1 << take) - 1) << bit);
      block += take;
    }
    Atomics.store(this.#counts, 0, count);
    Atomics.store(this.#counts, 1, clampPages(pages));
  }

  /**
   * Makes the mirror equal `set` (at start, and at a cut: an empty set), whose changed pages
   * are `pages` (−1: not known).
   */
  replace(set: Bitmap, pages: number): void {
    this.#bits.set(set.toBytes());
    Atomics.store(this.#counts, 0, set.popcount());
    Atomics.store(this.#counts, 1, clampPages(pages));
  }

  /** The set as a bitmap (the caller's to free). */
  toBitmap(): Bitmap {
    return Bitmap.fromBytes(this.#bits.slice(), this.blocks);
  }
}
