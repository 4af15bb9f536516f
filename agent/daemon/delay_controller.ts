/**
 * Delay-based yielding, after LEDBAT (RFC 6817): the lowest RTT seen recently is the base
 * (an empty queue); when the measured RTT rises above it by more than `targetMs`, queues
 * are building because someone else needs the link, so background sync slows down
 * multiplicatively; while below target it speeds up again additively. Pure: the caller
 * feeds RTT samples and times and multiplies its rate by {@linkcode DelayController.factor}.
 */
export class DelayController {
  readonly #targetMs: number;
  readonly #windowMs: number;
  /** [time, rtt] minima per bucket of 10 s, for a base that forgets old routes. */
  #minima: [number, number][] = [];
  #factor = 1;
  #lastDecreaseMs = -Infinity;

  constructor(targetMs = 25, baseWindowMs = 120_000) {
    this.#targetMs = targetMs;
    this.#windowMs = baseWindowMs;
  }

  /** Multiplier for the configured rate, from 0.05 (yield) to 1 (full configured rate). */
  get factor(): number {
    return this.#factor;
  }

  /** The base RTT (lowest recent sample), or undefined before the first sample. */
  get baseMs(): number | undefined {
    return this.#minima.length ? Math.min(...this.#minima.map(([, rtt]) => rtt)) : undefined;
  }

  /** Feeds one RTT sample taken at `nowMs`; returns the new factor. */
  update(rttMs: number, nowMs: number): number {
    const bucket = Math.floor(nowMs / 10_000);
    const last = this.#minima[this.#minima.length - 1];
    if (last && Math.floor(last[0] / 10_000) === bucket) last[1] = Math.min(last[1], rttMs);
    else this.#minima.push([nowMs, rttMs]);
    this.#minima = this.#minima.filter(([t]) => nowMs - t <= this.#windowMs);
    const queuingMs = rttMs - this.baseMs!;
    if (queuingMs > this.#targetMs) {
      // At most one decrease per RTT, as a congestion controller would.
      if (nowMs - this.#lastDecreaseMs >= rttMs) {
        this.#factor = Math.max(0.05, this.#factor * 0.7);
        this.#lastDecreaseMs = nowMs;
      }
    } else {
      this.#factor = Math.min(1, this.#factor + 0.05 * (1 - queuingMs / this.#targetMs));
    }
    return this.#factor;
  }
}
