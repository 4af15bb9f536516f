/** A send shorter than this says little about the link: short ones are added up first. */
const MIN_SAMPLE_SECONDS = 0.5;
/** Above this share of the rate limit, a send measured the limit, not the link. */
const THROTTLED_SHARE = 0.8;

/**
 * The goodput of a volume's link: wire bytes per second while sending, smoothed over the
 * generations sent. Pure: the caller reports each send's bytes and time on the wire.
 */
export class GoodputMeter {
  #bytesPerSecond = 0;
  /** Short unthrottled sends not yet folded in (small generations of a quiet VM). */
  #short = { wireBytes: 0, seconds: 0 };

  /** The smoothed goodput, bytes/s (0 until a send was measured). */
  get bytesPerSecond(): number {
    return this.#bytesPerSecond;
  }

  /**
   * Folds in one send: `wireBytes` in `seconds` on the wire, sent under a rate limit of
   * `limitBytesPerSecond` (Infinity: none). Sends held back by the limit are ignored: they
   * say nothing of the link. Short sends are added up until they last long enough to be one
   * sample (their round trips count, as they would for a small final generation).
   */
  record(wireBytes: number, seconds: number, limitBytesPerSecond: number): void {
    if (wireBytes <= 0 || seconds <= 0) return;
    if (
      limitBytesPerSecond !== Infinity &&
      wireBytes / seconds > THROTTLED_SHARE * limitBytesPerSecond
    ) {
      return;
    }
    if (seconds <= MIN_SAMPLE_SECONDS) {
      this.#short.wireBytes += wireBytes;
      this.#short.seconds += seconds;
      if (this.#short.seconds <= MIN_SAMPLE_SECONDS) return;
      wireBytes = this.#short.wireBytes;
      seconds = this.#short.seconds;
    }
    this.#short = { wireBytes: 0, seconds: 0 };
    const sample = wireBytes / seconds;
    // Half weight to the newest sample: the link of the last minute predicts best.
    this.#bytesPerSecond = this.#bytesPerSecond
      ? 0.5 * this.#bytesPerSecond + 0.5 * sample
      : sample;
  }
}
