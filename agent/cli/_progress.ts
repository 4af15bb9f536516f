import { formatBitRate, formatBytes } from "../units/mod.ts";

/** What a progress bar shows at one instant; every field is finite and in range. */
export interface ProgressSnapshot {
  /** Done over total, in [0, 1]. */
  fraction: number;
  doneBytes: number;
  totalBytes: number;
  remainingBytes: number;
  /** How fast `remaining` falls, bytes per second (null until a second has passed). */
  bytesPerSecond: number | null;
  /** Seconds to go at that speed (null when unknown). */
  etaSeconds: number | null;
}

/**
 * The progress of draining work whose size may change while it runs (a generation being
 * sent while the VM writes): fed the bytes remaining and the expected total, it never
 * shows a fraction outside [0, 1], a negative count or a total below what remains. The total
 * is the largest seen (remaining above the total raises it), so the bar never moves back
 * because new writes arrived; it stalls until they are sent.
 */
export class DrainProgress {
  #total = 0;
  #startedMs: number | null = null;
  #doneAtStart = 0;

  /** Takes a new reading at `nowMs` (any numbers: negatives and NaN count as 0). */
  update(remainingBytes: number, totalBytes: number, nowMs: number): ProgressSnapshot {
    const remaining = clean(remainingBytes);
    this.#total = Math.max(this.#total, clean(totalBytes), remaining);
    const done = this.#total - remaining;
    if (this.#startedMs === null) [this.#startedMs, this.#doneAtStart] = [nowMs, done];
    const seconds = (nowMs - this.#startedMs) / 1000;
    const speed = seconds >= 1 ? Math.max(0, done - this.#doneAtStart) / seconds : null;
    return {
      fraction: this.#total > 0 ? done / this.#total : 0,
      doneBytes: done,
      totalBytes: this.#total,
      remainingBytes: remaining,
      bytesPerSecond: speed,
      etaSeconds: speed && speed > 0 ? remaining / speed : remaining === 0 ? 0 : null,
    };
  }
}

function clean(bytes: number): number {
  return Number.isFinite(bytes) && bytes > 0 ? bytes : 0;
}

/** `2h05m`, `4m07s`, `12s`: a duration for people. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

/** The text beside a bar: `1.2 GiB of 2.9 GiB, 95.0 Mbit/s, 2m13s left`. */
export function describeProgress(p: ProgressSnapshot): string {
  return `${formatBytes(p.doneBytes)} of ${formatBytes(p.totalBytes)}` +
    (p.bytesPerSecond !== null ? `, ${formatBitRate(p.bytesPerSecond)}` : "") +
    (p.etaSeconds !== null ? `, ${formatDuration(p.etaSeconds)} left` : "");
}
