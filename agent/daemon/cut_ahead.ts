import { Bitmap } from "../core/mod.ts";
import type { Cut } from "../tracker.ts";

/** A cut and when it was taken. */
export interface TakenCut {
  cut: Cut;
  cutTimeMs: number;
}

/**
 * `cut` with the blocks of `extra` dirty too, read from it like the others and sent whole
 * (no page masks). Owns a copy of the union; its release frees it and releases `cut`.
 */
export function widenedCut(cut: Cut, extra: Bitmap): Cut {
  const dirty = cut.dirty.clone().or(extra);
  let released = false;
  return {
    dirty,
    pointInTime: cut.pointInTime,
    read: (first, count) => cut.read(first, count),
    release: async () => {
      if (released) return;
      released = true;
      dirty.free();
      await cut.release();
    },
  };
}

/**
 * An evacuation's final cut taken while the generation in flight goes on sending (a tracker
 * that `cutsWhileSending`, see `tracker.ts`). Such a cut compares the image with the source's
 * manifest, which the send keeps writing: a block whose entry the send wrote after the cut
 * started may have been compared with its old entry, so every block the send prepares from
 * the start of the cut on counts as dirty in the cut {@linkcode take} yields. (A block sent
 * again that way crosses as the pages that differ from what the destination staged: none
 * when it was read after the VM paused.)
 */
export class CutAhead {
  readonly #prepared: Bitmap;
  readonly #taking: Promise<TakenCut>;
  #settled = false;
  #taken = false;
  /** Blocks the send prepared while the cut was taken (set by {@linkcode take}). */
  preparedCount = 0;

  /** Starts `take` now; `blocks` is the volume's block count. */
  constructor(blocks: number, take: () => Promise<TakenCut>) {
    this.#prepared = new Bitmap(blocks);
    this.#taking = take();
    this.#taking.then(() => {}, () => {}).finally(() => this.#settled = true);
  }

  /** Whether the cut is taken (or failed). */
  get settled(): boolean {
    return this.#settled;
  }

  /** The send wrote the manifest entries of blocks `first … first+count-1`. */
  prepared(first: number, count: number): void {
    if (!this.#taken) this.#prepared.setRange(first, count);
  }

  /** Waits until the cut is taken or failed. Never throws. */
  async settle(): Promise<void> {
    await this.#taking.catch(() => {});
  }

  /**
   * The cut, with the blocks prepared since it started dirty too (the caller releases it).
   * Once, after the send stopped preparing blocks.
   *
   * @throws what the tracker's cut threw
   */
  async take(): Promise<TakenCut> {
    if (this.#taken) throw new Error("CutAhead.take: the cut was taken already");
    try {
      const { cut, cutTimeMs } = await this.#taking;
      this.preparedCount = this.#prepared.popcount();
      return { cut: widenedCut(cut, this.#prepared), cutTimeMs };
    } finally {
      this.#taken = true;
      this.#prepared.free();
    }
  }
}
