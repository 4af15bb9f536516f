/** A send shorter than this says little about the link. */
const MIN_SAMPLE_SECONDS = 0.5;
/** Above this share of the rate limit, a send measured the limit, not the link. */
const THROTTLED_SHARE = 0.8;

/**
 * The goodput of a volume's link: wire bytes per second while sending, smoothed over the
 * generations sent. Pure: the caller reports each send's bytes and time on the wire.
 */
export class GoodputMeter {
  #bytesPerSecond = 0;

  /** The smoothed goodput, bytes/s (0 until a send was measured). */
  get bytesPerSecond(): number {
    return this.#bytesPerSecond;
  }

  /**
   * Folds in one send: `wireBytes` in `seconds` on the wire, sent under a rate limit of
   * `limitBytesPerSecond` (Infinity: none). Short sends and sends held back by the limit
   * are ignored: they say nothing of the link.
   */
  record(wireBytes: number, seconds: number, limitBytesPerSecond: number): void {
    if (seconds <= MIN_SAMPLE_SECONDS || wireBytes <= 0) return;
    const sample = wireBytes / seconds;
    if (limitBytesPerSecond !== Infinity && sample > THROTTLED_SHARE * limitBytesPerSecond) return;
    // Half weight to the newest sample: the link of the last minute predicts best.
    this.#bytesPerSecond = this.#bytesPerSecond
      ? 0.5 * this.#bytesPerSecond + 0.5 * sample
      : sample;
  }
}
