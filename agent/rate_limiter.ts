/**
 * A token bucket: how long to wait before using `bytes` so that use stays under
 * `bytesPerSecond` on average, with at most `burstBytes` used at once after an idle spell.
 * Pure (the clock is passed in), so it is tested without sleeping.
 */
export class RateLimiter {
  #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last: number;

  /** `bytesPerSecond` 0 or Infinity means unlimited. */
  constructor(bytesPerSecond: number, burstBytes: number, nowMs: number) {
    this.#rate = bytesPerSecond > 0 ? bytesPerSecond : Infinity;
    this.#burst = burstBytes;
    this.#tokens = burstBytes;
    this.#last = nowMs;
  }

  /** Current limit in bytes per second (Infinity when unlimited). */
  get bytesPerSecond(): number {
    return this.#rate;
  }

  /** Changes the limit (0 or Infinity: unlimited). */
  setRate(bytesPerSecond: number, nowMs: number): void {
    this.#refill(nowMs);
    this.#rate = bytesPerSecond > 0 ? bytesPerSecond : Infinity;
  }

  #refill(nowMs: number): void {
    if (this.#rate === Infinity) {
      this.#tokens = this.#burst;
    } else {
      this.#tokens = Math.min(this.#burst, this.#tokens + (nowMs - this.#last) * this.#rate / 1000);
    }
    this.#last = nowMs;
  }

  /** Takes `bytes` and returns the milliseconds to wait before using them (0: go now). */
  take(bytes: number, nowMs: number): number {
    this.#refill(nowMs);
    if (this.#rate === Infinity) return 0;
    this.#tokens -= bytes;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / this.#rate) * 1000;
  }
}

/** Waits as {@linkcode RateLimiter.take} says. */
export async function throttle(limiter: RateLimiter, bytes: number): Promise<void> {
  const waitMs = limiter.take(bytes, performance.now());
  if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
}
