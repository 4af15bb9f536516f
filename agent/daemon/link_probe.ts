/** How often a rate-limited volume probes its link, ms. */
export const PROBE_EVERY_MS = 5 * 60_000;
/** How long a probe sends unthrottled, ms (its first `PROBE_WARMUP_MS` are not counted). */
export const PROBE_MS = 3_000;
/** The start of a probe, while the session's windows fill, is not counted, ms. */
export const PROBE_WARMUP_MS = 1_000;

/**
 * The link's capacity while `--rate` holds background sends back, when goodput only measures
 * the limit: every {@linkcode PROBE_EVERY_MS}, the sender ignores the limit for
 * {@linkcode PROBE_MS} (1% of the time) and counts the bytes the session took after a warm-up
 * (once its windows are full, it takes bytes as fast as the link acknowledges them). A probe
 * that is interrupted (the generation ended, the volume was paused, the limit lifted) is
 * dropped and tried again at the next send. Pure: the caller passes the clock.
 */
export class LinkProbe {
  readonly #everyMs: number;
  readonly #probeMs: number;
  readonly #warmupMs: number;
  #startedMs: number | null = null;
  #countedBytes = 0;
  #lastEndMs = -Infinity;
  #bytesPerSecond = 0;

  constructor(everyMs = PROBE_EVERY_MS, probeMs = PROBE_MS, warmupMs = PROBE_WARMUP_MS) {
    this.#everyMs = everyMs;
    this.#probeMs = probeMs;
    this.#warmupMs = warmupMs;
  }

  /** The last finished probe's measure, bytes/s (0: none yet). */
  get bytesPerSecond(): number {
    return this.#bytesPerSecond;
  }

  /** Whether a probe runs. */
  get probing(): boolean {
    return this.#startedMs !== null;
  }

  /**
   * Called before `wireBytes` go out at `nowMs` under a limit of `limitBytesPerSecond`
   * (Infinity: none); true when they go unthrottled, as part of a probe.
   */
  beforeSend(wireBytes: number, nowMs: number, limitBytesPerSecond: number): boolean {
    if (limitBytesPerSecond === Infinity) {
      this.abort();
      return false;
    }
    if (this.#startedMs === null) {
      if (nowMs - this.#lastEndMs < this.#everyMs) return false;
      this.#startedMs = nowMs;
      this.#countedBytes = 0;
    }
    const elapsed = nowMs - this.#startedMs;
    if (elapsed >= this.#probeMs) {
      const seconds = (elapsed - this.#warmupMs) / 1000;
      if (this.#countedBytes > 0) this.#bytesPerSecond = this.#countedBytes / seconds;
      this.#startedMs = null;
      this.#lastEndMs = nowMs;
      return false;
    }
    if (elapsed >= this.#warmupMs) this.#countedBytes += wireBytes;
    return true;
  }

  /**
   * Drops a running probe (the send paused or ended) without a measure. It still counts as
   * this period's probe: the next one starts a whole period after it began, or every short
   * send would start one and `--rate` would never hold.
   */
  abort(): void {
    if (this.#startedMs !== null) this.#lastEndMs = this.#startedMs;
    this.#startedMs = null;
  }
}
