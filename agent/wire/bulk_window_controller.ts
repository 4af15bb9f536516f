/** Options of {@linkcode BulkWindowController}. */
export interface BulkWindowOptions {
  /** The window before a rate is measured, bytes (default 512 KiB). */
  startBytes?: number;
  /** The smallest window, bytes (default 128 KiB). */
  minBytes?: number;
  /** Arrival-rate samples looked back over; the highest counts (default 8). */
  samples?: number;
}

/**
 * A narrow receive window for a bulk stream, near the link's bandwidth-delay product instead
 * of the session's default (sized for throughput): the sender then keeps only about that much
 * bulk in the network, so an on-demand answer (a postcopy fetch) waits behind about one round
 * trip of bulk instead of seconds of it. The window follows the highest arrival rate of the
 * recent samples times the smallest RTT seen, ×1.5 so the link stays full (windows are
 * granted back in quarters: between 3/4 and all of it is in flight). Pure: the caller feeds
 * the bytes received so far, the time and RTT samples, and applies the window.
 */
export class BulkWindowController {
  /** The window to apply before the first sample, bytes. */
  readonly startBytes: number;
  readonly #minBytes: number;
  readonly #samples: number;
  readonly #rates: number[] = [];
  #minRttMs = Infinity;
  #last: { atMs: number; received: number } | null = null;

  constructor(options: BulkWindowOptions = {}) {
    this.startBytes = options.startBytes ?? 512 * 1024;
    this.#minBytes = options.minBytes ?? 128 * 1024;
    this.#samples = options.samples ?? 8;
  }

  /**
   * Folds in one sample: `receivedBytes` received on the stream so far, at `nowMs`, with an
   * RTT of `rttMs` measured since the last sample. Returns the window to apply, bytes (the
   * start window for the first sample, which only sets the baseline).
   */
  update(receivedBytes: number, nowMs: number, rttMs: number): number {
    this.#minRttMs = Math.min(this.#minRttMs, rttMs);
    const last = this.#last;
    this.#last = { atMs: nowMs, received: receivedBytes };
    if (last === null || nowMs <= last.atMs) return this.startBytes;
    this.#rates.push((receivedBytes - last.received) / ((nowMs - last.atMs) / 1000));
    if (this.#rates.length > this.#samples) this.#rates.shift();
    const rate = Math.max(...this.#rates);
    return Math.round(Math.max(this.#minBytes, 1.5 * rate * this.#minRttMs / 1000));
  }
}
