/**
 * How fast a volume's VM dirties blocks, from the cuts: the blocks the last generation found
 * over the time since the cut before it (generations after the first: the first is the whole
 * image). Pure: the caller passes the clock.
 */
export class WriteRate {
  #lastCutMs = -Infinity;
  #blocksPerSecond = 0;
  #lastBlocks = 0;
  #measured = false;

  /** When the last cut was taken (ms since the epoch; -Infinity before the first). */
  get lastCutMs(): number {
    return this.#lastCutMs;
  }

  /** Blocks the last generation (after the first) found dirty. */
  get lastBlocks(): number {
    return this.#lastBlocks;
  }

  /** Dirty blocks per second, as of the last cut. */
  get blocksPerSecond(): number {
    return this.#blocksPerSecond;
  }

  /**
   * Records a cut of `dirtyBlocks` taken at `cutTimeMs`; `first` when it is the volume's
   * first generation (the whole image, not a rate).
   */
  recordCut(dirtyBlocks: number, cutTimeMs: number, first: boolean): void {
    const elapsedSeconds = (cutTimeMs - this.#lastCutMs) / 1000;
    if (!first && Number.isFinite(elapsedSeconds) && elapsedSeconds > 0) {
      this.#lastBlocks = dirtyBlocks;
      this.#blocksPerSecond = dirtyBlocks / elapsedSeconds;
      this.#measured = true;
    }
    this.#lastCutMs = cutTimeMs;
  }

  /**
   * Starts the clock at `cutTimeMs`, the cut before this process's first one (the committed
   * generation's), so that the first cut after a restart measures a rate. No-op once a cut
   * was recorded.
   */
  seed(cutTimeMs: number): void {
    if (!Number.isFinite(this.#lastCutMs) && cutTimeMs > 0) this.#lastCutMs = cutTimeMs;
  }

  /**
   * Blocks likely written since the last cut, at `nowMs`: at the last generation's rate,
   * but no more than it found (rewrites of a hot set do not add up); null until a rate was
   * measured (two cuts), since nothing is known then.
   */
  freshBlocks(nowMs: number): number | null {
    if (!this.#measured) return null;
    const seconds = (nowMs - this.#lastCutMs) / 1000;
    return Math.min(Math.round(this.#blocksPerSecond * seconds), this.#lastBlocks);
  }

  /** Ms until a cut is due, `intervalMs` after the last one (≤ 0: due now; at once at start). */
  dueInMs(intervalMs: number, nowMs: number): number {
    return this.#lastCutMs + intervalMs - nowMs;
  }
}
