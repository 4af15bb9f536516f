import { DelayController } from "./delay_controller.ts";
import { type Rate, scheduledRate, type ScheduleRule } from "./rate_schedule.ts";

/** Options of {@linkcode RatePolicy}. */
export interface RatePolicyOptions {
  /** Background rate limit, bytes/s (Infinity: unlimited). */
  rate: Rate;
  /** Time-of-day rates; the first matching rule overrides `rate`. */
  schedule: ScheduleRule[];
  /** Queuing delay above the base RTT at which background sync yields, ms (0: off). */
  delayTargetMs: number;
}

/**
 * The background send rate of a volume: the configured rate or the schedule's, scaled down
 * by the delay controller while the link's queues grow; an evacuation lifts every limit.
 * Pure: the caller feeds RTT samples and the time.
 */
export class RatePolicy {
  readonly #options: RatePolicyOptions;
  readonly #delay: DelayController;

  constructor(options: RatePolicyOptions) {
    this.#options = options;
    this.#delay = new DelayController(options.delayTargetMs > 0 ? options.delayTargetMs : 25);
  }

  /** Feeds one RTT sample taken at `nowMs` (`performance.now()` clock). */
  onRtt(rttMs: number, nowMs: number): void {
    if (this.#options.delayTargetMs > 0) this.#delay.update(rttMs, nowMs);
  }

  /** Bytes/s a volume may send at local time `now` (Infinity: unlimited). */
  rateAt(now: Date, evacuating: boolean): Rate {
    if (evacuating) return Infinity;
    const base = scheduledRate(
      this.#options.schedule,
      now.getHours() * 60 + now.getMinutes(),
      this.#options.rate,
    );
    return base === Infinity ? Infinity : base * this.#delay.factor;
  }
}
