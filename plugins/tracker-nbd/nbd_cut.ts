import type { Bitmap } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { PositionalFile } from "../../agent/nbd/mod.ts";
import type { Cut } from "../../agent/tracker.ts";
import type { PageMasks } from "../../agent/volume/page_masks.ts";
import { PreservedBlocks } from "./preserved_blocks.ts";

/**
 * One generation of the NBD tracker. While it is unreleased, the tracker's write path
 * preserves the old content of any of its dirty blocks before overwriting it, so `read`
 * returns the blocks as they were at the cut.
 *
 * Why `read` is point-in-time without locking the VM's writes: it reads the image first and
 * only then asks which blocks were preserved. A write to block b marks b preserved *before*
 * its bytes reach the image; so if the image read could have seen any new byte of b, b was
 * preserved by the time the read finished, and the preserved copy replaces it.
 */
export class NbdCut implements Cut {
  readonly dirty: Bitmap;
  readonly pointInTime: boolean;
  /** Old contents of overwritten blocks (only for point-in-time cuts). */
  readonly preserved: PreservedBlocks;
  /** Blocks whose preservation is under way: a second writer waits for it. */
  readonly pending = new Map<number, Promise<void>>();
  readonly #image: PositionalFile;
  readonly #pages: PageMasks | null;
  readonly #blockSize: number;
  readonly #sizeBytes: number;
  readonly #onRelease: (cut: NbdCut) => void;
  #released = false;

  constructor(options: {
    dirty: Bitmap;
    pointInTime: boolean;
    /** The changed pages of the dirty blocks (null: unknown, every block whole). */
    pages: PageMasks | null;
    image: PositionalFile;
    blockSize: number;
    sizeBytes: number;
    preserved: PreservedBlocks;
    onRelease: (cut: NbdCut) => void;
  }) {
    this.dirty = options.dirty;
    this.pointInTime = options.pointInTime;
    this.#image = options.image;
    this.#pages = options.pages;
    this.#blockSize = options.blockSize;
    this.#sizeBytes = options.sizeBytes;
    this.preserved = options.preserved;
    this.#onRelease = options.onRelease;
  }

  /** Whether the write path must still preserve `block` for this cut. */
  needsPreserving(block: number): boolean {
    return this.pointInTime && !this.#released && this.dirty.get(block) &&
      !this.preserved.has(block);
  }

  pageMask(block: number): number | undefined {
    return this.#pages?.get(block);
  }

  /** Whether the cut knows its pages (a block without a mask is then whole). */
  get knowsPages(): boolean {
    return this.#pages !== null;
  }

  /** The page masks as `[block, mask]` pairs (empty when pages are unknown). */
  pagePairs(): Uint32Array<ArrayBuffer> {
    return this.#pages?.toPairs() ?? new Uint32Array(0);
  }

  async read(first: number, count: number): Promise<Uint8Array> {
    if (this.#released) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "NBD tracker cut read after release()");
    }
    const offset = first * this.#blockSize;
    const length = Math.min(count * this.#blockSize, this.#sizeBytes - offset);
    if (first < 0 || count < 1 || length <= 0) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `cut read of blocks ${first}..${first + count - 1} is outside the volume`,
      );
    }
    const data = await this.#image.read(offset, new Uint8Array(length));
    if (this.preserved.count === 0) return data;
    for (let i = 0; i < count; i++) {
      const old = await this.preserved.get(first + i);
      if (old) data.set(old, i * this.#blockSize);
    }
    return data;
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    this.#onRelease(this);
    await Promise.allSettled([...this.pending.values()]);
    await this.preserved.close();
    await this.#image.close();
    this.dirty.free();
  }
}
