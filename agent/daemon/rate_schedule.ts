import { ErrorCode, PresyncError } from "../errors.ts";

/** Bytes per second; `Infinity` means unlimited. */
export type Rate = number;

/**
 * Parses a rate: `0` (unlimited), `20mbit`, `500kbit`, `1gbit`, `10MB` (bytes), `65536`
 * (bytes per second). Throws `INVALID_ARGUMENT` naming the flag.
 */
export function parseRate(flag: string, text: string): Rate {
  const match = /^(\d+(?:\.\d+)?)\s*(|k|m|g)(bit|b|B)?$/i.exec(text.trim());
  if (!match) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--${flag} must be a rate such as 20mbit, 500kbit, 10MB or 0 (unlimited): received ${
        JSON.stringify(text)
      }`,
    );
  }
  const value = Number(match[1]);
  if (value === 0) return Infinity;
  const scale = { "": 1, k: 1e3, m: 1e6, g: 1e9 }[match[2].toLowerCase()]!;
  const bits = (match[3] ?? "").toLowerCase() === "bit";
  return bits ? (value * scale) / 8 : value * scale;
}

/** One schedule rule: minutes since midnight [from, to) → rate; `from`/`to` null for `*`. */
export interface ScheduleRule {
  from: number | null;
  to: number | null;
  rate: Rate;
}

/**
 * Parses a time-of-day schedule such as `08:00-20:00=10mbit,*=0`: the first rule whose
 * window contains the local time wins; `*` matches any time; windows may wrap midnight
 * (`22:00-06:00=50mbit`).
 */
export function parseSchedule(text: string): ScheduleRule[] {
  return text.split(",").map((part) => {
    const [window, rateText] = part.split("=");
    if (rateText === undefined) throw badSchedule(text);
    const rate = parseRate("schedule", rateText);
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
