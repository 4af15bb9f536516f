/** What {@linkcode LogThrottle.record} decided about one line. */
export interface ThrottleDecision {
  /** Whether to log the line. */
  log: boolean;
  /** Lines of this key suppressed in the window that just ended (report them with this one). */
  suppressedBefore: number;
}

/**
 * Rate limit for log lines an attacker can cause at will (refused connections, failed
 * handshakes), pure: per key, at most `linesPerWindow` lines per `windowMs`; the rest are
 * counted and reported, with the next line logged or by {@linkcode LogThrottle.flush} once
 * their window ended.
 *
 * @example
 * ```ts
 * import { LogThrottle } from "./log_throttle.ts";
 * const throttle = new LogThrottle(1, 10_000);
 * console.assert(throttle.record("auth_failed", 0).log);
 * console.assert(!throttle.record("auth_failed", 5).log);
 * console.assert(throttle.flush(10_000)[0].suppressed === 1);
 * ```
 */
export class LogThrottle {
  /** The window length, ms. */
  readonly windowMs: number;
  readonly #linesPerWindow: number;
  readonly #windows = new Map<string, { startMs: number; logged: number; suppressed: number }>();

  constructor(linesPerWindow: number, windowMs: number) {
    this.#linesPerWindow = linesPerWindow;
    this.windowMs = windowMs;
  }

  /** Decides on one line with `key` at `nowMs`, and counts it. */
  record(key: string, nowMs: number): ThrottleDecision {
    const window = this.#windows.get(key);
    if (window === undefined || nowMs - window.startMs >= this.windowMs) {
      this.#windows.set(key, { startMs: nowMs, logged: 1, suppressed: 0 });
      return { log: true, suppressedBefore: window?.suppressed ?? 0 };
    }
    if (window.logged < this.#linesPerWindow) {
      window.logged++;
      return { log: true, suppressedBefore: 0 };
    }
    window.suppressed++;
    return { log: false, suppressedBefore: 0 };
  }

  /** True while some key has suppressed lines not reported yet. */
  get holding(): boolean {
    for (const window of this.#windows.values()) if (window.suppressed > 0) return true;
    return false;
  }

  /** The keys whose window ended by `nowMs` with lines suppressed, and how many; forgotten. */
  flush(nowMs: number): { key: string; suppressed: number }[] {
    const out = [];
    for (const [key, window] of this.#windows) {
      if (nowMs - window.startMs < this.windowMs) continue;
      if (window.suppressed > 0) out.push({ key, suppressed: window.suppressed });
      this.#windows.delete(key);
    }
    return out;
  }
}
