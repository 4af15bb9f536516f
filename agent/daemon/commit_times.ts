/**
 * The commit times of a volume's last generations, which an evacuation's commit is predicted
 * from. Medians and minimums over a window, not a smoothed last value: one slow commit (a busy
 * destination disk during pre-sync) must not double the prediction, and one quick one must not
 * halve it.
 *
 * @module
 */

/** One committed generation: its blocks, how long its commit took and the RTT then. */
interface CommitSample {
  blocks: number;
  seconds: number;
  rttSeconds: number;
}

/** The last {@linkcode CommitTimes.window} commits of a volume. */
export class CommitTimes {
  readonly #samples: CommitSample[] = [];

  constructor(readonly window = 8) {}

  /** A generation of `blocks` blocks committed in `seconds` (its round trip included). */
  add(blocks: number, seconds: number, rttSeconds: number): void {
    if (blocks <= 0 || !(seconds > 0)) return;
    this.#samples.push({ blocks, seconds, rttSeconds });
    if (this.#samples.length > this.window) this.#samples.shift();
  }

  /** The median commit time per block beyond the round trip, s (0: no commit yet). */
  get secondsPerBlock(): number {
    const perBlock = this.#samples.map((s) => Math.max(0, s.seconds - s.rttSeconds) / s.blocks);
    return median(perBlock);
  }

  /** The quickest commit of the window, s (0: no commit yet): a commit's fixed costs. */
  get quickestSeconds(): number {
    return this.#samples.length ? Math.min(...this.#samples.map((s) => s.seconds)) : 0;
  }
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = values.toSorted((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
