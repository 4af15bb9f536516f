/** First retry delay, ms. */
const BASE_MS = 250;
/** Longest retry delay, ms. */
const MAX_MS = 30_000;

/**
 * Exponential backoff with jitter for reconnects and retries: 250 ms doubling up to 30 s,
 * each delay scaled by a random factor from 0.5 to 1.5 so that many agents do not retry in
 * step. Pure: the caller passes the random number.
 */
export class Backoff {
  #attempt = 0;

  /** The delay before the next attempt, ms; `random` is uniform in [0, 1). */
  next(random: number): number {
    const delayMs = Math.min(MAX_MS, BASE_MS * 2 ** this.#attempt) * (0.5 + random);
    this.#attempt = Math.min(this.#attempt + 1, 10);
    return delayMs;
  }

  /** Starts over at the shortest delay (after a success). */
  reset(): void {
    this.#attempt = 0;
  }
}
