import { ErrorCode, PresyncError } from "../errors.ts";
import { parseRate } from "../units/mod.ts";

/** Bytes per second; `Infinity` means unlimited (see `agent/units/`). */
export type Rate = number;

/** One schedule rule: minutes since midnight [from, to) → rate; `from`/`to` null for `*`. */
export interface ScheduleRule {
  from: number | null;
  to: number | null;
  rate: Rate;
}

/**
 * Parses a time-of-day schedule such as `08:00-20:00=10mbit,*=0`: the first rule whose
 * window contains the local time wins; `*` matches any time; windows may wrap midnight
 * (`22:00-06:00=50mbit`). Rates are read by the one rate parser (`agent/units/`).
 */
export function parseSchedule(text: string): ScheduleRule[] {
  return text.split(",").map((part) => {
    const [window, rateText] = part.split("=");
    if (rateText === undefined) throw badSchedule(text);
    const rate = parseRate("--schedule", rateText);
    if (window.trim() === "*") return { from: null, to: null, rate };
    const match = /^(\d\d):(\d\d)-(\d\d):(\d\d)$/.exec(window.trim());
    if (!match) throw badSchedule(text);
    const [h1, m1, h2, m2] = match.slice(1).map(Number);
    if (h1 > 23 || h2 > 24 || m1 > 59 || m2 > 59) throw badSchedule(text);
    return { from: h1 * 60 + m1, to: h2 * 60 + m2, rate };
  });
}

function badSchedule(text: string): PresyncError {
  return new PresyncError(
    ErrorCode.INVALID_ARGUMENT,
    `--schedule must look like 08:00-20:00=10mbit,*=0: received ${JSON.stringify(text)}`,
  );
}

/** The rate a schedule gives at `minuteOfDay`, or `fallback` when no rule matches. */
export function scheduledRate(rules: ScheduleRule[], minuteOfDay: number, fallback: Rate): Rate {
  for (const rule of rules) {
    if (rule.from === null || rule.to === null) return rule.rate;
    const inside = rule.from <= rule.to
      ? minuteOfDay >= rule.from && minuteOfDay < rule.to
      : minuteOfDay >= rule.from || minuteOfDay < rule.to;
    if (inside) return rule.rate;
  }
  return fallback;
}
