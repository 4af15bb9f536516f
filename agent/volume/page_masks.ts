/**
 * Which 4 KiB pages of a dirty block changed: the unit a write touches is usually a page,
 * while the tracker's unit is the (64 KiB) block. A page mask is a number whose bit `i` says
 * page `i` of the block (bytes `i·4096 …`) changed; a block with no mask changed as a whole.
 *
 * @module
 */

import { blake3 } from "../core/mod.ts";

/** Bytes of a page, the unit a page mask counts in. */
export const PAGE_BYTES = 4096;
/** Most pages a block may have for page masks (one bit each in a 32-bit number). */
export const MAX_PAGES_PER_BLOCK = 32;
/**
 * Most masks kept by default: past it, newly dirty blocks count as whole blocks. About 64
 * MiB of memory at most, whatever the volume's size (a Map entry costs ~50–60 bytes).
 */
export const DEFAULT_MAX_MASKS = 1 << 20;

/** Whether blocks of `blockSize` bytes can carry page masks (2 to 32 whole pages). */
export function pageMasksSupported(blockSize: number): boolean {
  const pages = blockSize / PAGE_BYTES;
  return Number.isInteger(pages) && pages >= 2 && pages <= MAX_PAGES_PER_BLOCK;
}

/** The pages that bytes `[from, to)` of a block touch, as a mask (`from < to`). */
export function pagesTouched(from: number, to: number): number {
  const first = Math.floor(from / PAGE_BYTES);
  const last = Math.floor((to - 1) / PAGE_BYTES);
  const count = last - first + 1;
  return (count >= 32 ? 0xFFFF_FFFF : ((1 << count) - 1) << first) >>> 0;
}

/**
 * The byte runs `[offset, length]` of a block of `blockLength` bytes that the pages of `mask`
 * cover, in order, adjacent pages joined; pages past the block's end are left out.
 */
export function maskRuns(mask: number, blockLength: number): [number, number][] {
  const runs: [number, number][] = [];
  let page = 0;
  while (page < MAX_PAGES_PER_BLOCK && page * PAGE_BYTES < blockLength) {
    if (((mask >>> page) & 1) === 0) {
      page++;
      continue;
    }
    const start = page;
    while (page < MAX_PAGES_PER_BLOCK && ((mask >>> page) & 1) === 1) page++;
    const offset = start * PAGE_BYTES;
    runs.push([offset, Math.min(page * PAGE_BYTES, blockLength) - offset]);
  }
  return runs;
}

/** Bytes of one page digest: the first 16 bytes of the page's BLAKE3. */
export const PAGE_DIGEST_BYTES = 16;

/** Pages of a block of `blockLength` bytes (the last one may be short). */
export function pagesIn(blockLength: number): number {
  return Math.ceil(blockLength / PAGE_BYTES);
}

/** The digests of each page of `block`, {@linkcode PAGE_DIGEST_BYTES} each, in order. */
export function pageDigests(block: Uint8Array): Uint8Array {
  const pages = pagesIn(block.length);
  const out = new Uint8Array(pages * PAGE_DIGEST_BYTES);
  for (let i = 0; i < pages; i++) {
    const page = block.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES);
    out.set(blake3(page).subarray(0, PAGE_DIGEST_BYTES), i * PAGE_DIGEST_BYTES);
  }
  return out;
}

/**
 * The mask of pages of `block` whose digests differ from `theirs` (another copy's
 * {@linkcode pageDigests}); undefined when every page differs (send it whole). When none
 * differs, the first page: a patch holds at least one run, and one page is the least a copy
 * that is already this block can be sent as (a block re-dirtied but written back as it was).
 */
export function differingPages(block: Uint8Array, theirs: Uint8Array): number | undefined {
  const ours = pageDigests(block);
  let mask = 0;
  for (let i = 0; i * PAGE_DIGEST_BYTES < ours.length; i++) {
    for (let j = i * PAGE_DIGEST_BYTES; j < (i + 1) * PAGE_DIGEST_BYTES; j++) {
      if (ours[j] !== theirs[j]) {
        mask |= 1 << i;
        break;
      }
    }
  }
  mask = mask >>> 0 || 1;
  const all = pagesIn(block.length) >= 32 ? 0xFFFF_FFFF : ((1 << pagesIn(block.length)) - 1) >>> 0;
  return mask === all ? undefined : mask;
}

/** Number of bits set in a 32-bit mask. */
export function maskPopcount(mask: number): number {
  let v = mask >>> 0;
  let n = 0;
  while (v !== 0) {
    v &= v - 1;
    n++;
  }
  return n;
}

/** Pages a block of `blockLength` bytes sends with `mask` (undefined: whole, all its pages). */
export function maskPages(mask: number | undefined, blockLength: number): number {
  return mask === undefined ? pagesIn(blockLength) : maskPopcount(mask);
}

/** What {@linkcode PageMasks.mark} needs of the dirty bitmap it shadows. */
export interface DirtyBits {
  get(block: number): boolean;
}

/**
 * The page masks of one generation's dirty blocks, kept only for blocks written partly
 * since the cut: a block dirty before tracking began (or past `maxMasks`) and a block whose
 * every page was written have no entry and count as whole. Memory is bounded by `maxMasks`
 * entries, not by the volume's size.
 */
export class PageMasks {
  readonly blockSize: number;
  readonly #pages: number;
  readonly #full: number;
  readonly #maxMasks: number;
  readonly #masks = new Map<number, number>();
  /** Pages set over all masks. */
  #maskedPages = 0;

  /** @throws {RangeError} when `blockSize` cannot carry page masks ({@linkcode pageMasksSupported}) */
  constructor(blockSize: number, maxMasks: number = DEFAULT_MAX_MASKS) {
    if (!pageMasksSupported(blockSize)) {
      throw new RangeError(
        `page masks need blocks of 2 to ${MAX_PAGES_PER_BLOCK} pages of ${PAGE_BYTES} bytes: ` +
          `received a block size of ${blockSize}`,
      );
    }
    this.blockSize = blockSize;
    this.#pages = blockSize / PAGE_BYTES;
    this.#full = pagesTouched(0, blockSize);
    this.#maxMasks = maxMasks;
  }

  /** Masks held (blocks written partly). */
  get size(): number {
    return this.#masks.size;
  }

  /**
   * Records a change of bytes `[offset, offset + length)` of the volume. Call it *before*
   * the blocks are marked in `dirty` (the generation's bitmap): a block already dirty without
   * a mask is whole and stays so. O(1) per block.
   */
  mark(dirty: DirtyBits, offset: number, length: number): void {
    if (length <= 0) return;
    const { blockSize } = this;
    const end = offset + length;
    const first = Math.floor(offset / blockSize);
    const last = Math.floor((end - 1) / blockSize);
    this.#markBlock(
      dirty,
      first,
      offset - first * blockSize,
      Math.min(end, (first + 1) * blockSize) - first * blockSize,
    );
    if (last === first) return;
    // Blocks in between are written whole: drop their masks (absent means whole).
    if (this.#masks.size > 0) {
      for (let block = first + 1; block < last; block++) this.#drop(block);
    }
    this.#markBlock(dirty, last, 0, end - last * blockSize);
  }

  #markBlock(dirty: DirtyBits, block: number, from: number, to: number): void {
    const bits = pagesTouched(from, to);
    const old = this.#masks.get(block);
    if (old === undefined) {
      // Dirty without a mask: whole already. Newly dirty: keep a mask while there is room.
      if (dirty.get(block) || bits === this.#full || this.#masks.size >= this.#maxMasks) return;
      this.#masks.set(block, bits);
      this.#maskedPages += maskPopcount(bits);
      return;
    }
    const merged = (old | bits) >>> 0;
    if (merged === this.#full) this.#drop(block);
    else {
      this.#masks.set(block, merged);
      this.#maskedPages += maskPopcount(merged) - maskPopcount(old);
    }
  }

  #drop(block: number): void {
    const old = this.#masks.get(block);
    if (old === undefined) return;
    this.#masks.delete(block);
    this.#maskedPages -= maskPopcount(old);
  }

  /**
   * Pages changed in the `dirtyBlocks` blocks of the dirty set these masks shadow: those of
   * the masks, and every page of each block without one (whole; a short last block counts
   * as long as the others).
   */
  changedPages(dirtyBlocks: number): number {
    return this.#maskedPages + Math.max(0, dirtyBlocks - this.#masks.size) * this.#pages;
  }

  /** The changed pages of dirty `block`, or undefined when it counts as whole. */
  get(block: number): number | undefined {
    return this.#masks.get(block);
  }

  /** The masks as `[block, mask]` pairs (to cross to another thread). */
  toPairs(): Uint32Array<ArrayBuffer> {
    const pairs = new Uint32Array(this.#masks.size * 2);
    let i = 0;
    for (const [block, mask] of this.#masks) {
      pairs[i++] = block;
      pairs[i++] = mask;
    }
    return pairs;
  }

  /** Masks from {@linkcode toPairs}' output. */
  static fromPairs(blockSize: number, pairs: Uint32Array): PageMasks {
    const masks = new PageMasks(blockSize, Math.max(DEFAULT_MAX_MASKS, pairs.length / 2));
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      masks.#masks.set(pairs[i], pairs[i + 1]);
      masks.#maskedPages += maskPopcount(pairs[i + 1]);
    }
    return masks;
  }

  /** Pages per block. */
  get pagesPerBlock(): number {
    return this.#pages;
  }
}
