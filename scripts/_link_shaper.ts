/**
 * When a chunk leaves one direction of an emulated link: it waits for the link to be free,
 * takes `bytes · 8 / rate` to serialize, then `delayMs` to propagate. Pure: times in, times
 * out. One shaper shared by every connection models one shared link; one per connection
 * models a per-flow rate cap.
 */
export class LinkShaper {
  readonly delayMs: number;
  readonly rateBitsPerSecond: number;
  #linkFreeAtMs = 0;

  /** `rateBitsPerSecond` 0 means unlimited. */
  constructor(delayMs: number, rateBitsPerSecond: number) {
    this.delayMs = delayMs;
    this.rateBitsPerSecond = rateBitsPerSecond;
  }

  /** Bytes waiting to be serialized at `nowMs` (the bottleneck queue); 0 when unlimited. */
  backlogBytes(nowMs: number): number {
    if (this.rateBitsPerSecond <= 0) return 0;
    return Math.max(0, this.#linkFreeAtMs - nowMs) * this.rateBitsPerSecond / 8000;
  }

  /** Returns the time (same clock as `nowMs`) at which `bytes` arriving at `nowMs` are delivered. */
  schedule(bytes: number, nowMs: number): number {
    if (this.rateBitsPerSecond <= 0) return nowMs + this.delayMs;
    const start = Math.max(nowMs, this.#linkFreeAtMs);
    this.#linkFreeAtMs = start + (bytes * 8 * 1000) / this.rateBitsPerSecond;
    return this.#linkFreeAtMs + this.delayMs;
  }
}
