import { LogThrottle } from "./log_throttle.ts";
import {
  defaultPreauthLimits,
  PreauthGate,
  type PreauthLimits,
  sourceAddress,
} from "./preauth_gate.ts";
import type { SessionLogEntry, SessionLogger } from "./session_logger.ts";
import type { ByteChannel } from "./transport.ts";

/** Log events a peer can cause before it authenticates; these are rate-limited. */
const PREAUTH_EVENTS = new Set([
  "preauth_refused",
  "auth_failed",
  "handshake_failed",
  "handshake_corrupt",
  "connection_abandoned",
]);

/** Options of {@linkcode PreauthGuard}. */
export interface PreauthGuardOptions {
  /** Where log lines go (pre-auth ones rate-limited). */
  logger: SessionLogger;
  /** Limits (defaults: {@linkcode defaultPreauthLimits}). */
  limits?: Partial<PreauthLimits>;
  /** Pre-auth lines logged per event and window (default 10). */
  linesPerWindow?: number;
  /** The rate-limit window, in ms (default 10,000). */
  windowMs?: number;
  /** Source of early-drop randomness, [0, 1) (default `Math.random`). */
  random?: () => number;
}

/** An admitted connection's slot; see {@linkcode PreauthGuard.admit}. */
export interface PreauthSlot {
  /**
   * Runs the handshake: closes the channel once the deadline passes, and gives the slot
   * back when `handshake` settles either way. Call once.
   */
  run<T>(handshake: () => Promise<T>): Promise<T>;
}

/**
 * The thin I/O shell around {@linkcode PreauthGate} for a server's accept loop: refuses (closes)
 * connections beyond the limits, holds each admitted one to the handshake deadline, and
 * rate-limits the log lines unauthenticated peers cause, reporting how many were suppressed.
 *
 * @example
 * ```ts ignore
 * const guard = new PreauthGuard({ logger });
 * for await (const channel of listener) {
 *   const slot = guard.admit(channel);
 *   slot?.run(() => Session.accept(channel, { psk, logger: guard.logger })).then(serve, () => {});
 * }
 * ```
 */
export class PreauthGuard {
  /** The admission policy and its counters. */
  readonly gate: PreauthGate;
  /** Passes lines on, rate-limiting the pre-auth events. Give it to `Session.accept`. */
  readonly logger: SessionLogger;
  readonly #out: SessionLogger;
  readonly #throttle: LogThrottle;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: PreauthGuardOptions) {
    this.gate = new PreauthGate({ ...defaultPreauthLimits(), ...options.limits }, options.random);
    this.#out = options.logger;
    this.#throttle = new LogThrottle(options.linesPerWindow ?? 10, options.windowMs ?? 10_000);
    this.logger = (entry) => this.#log(entry);
  }

  /**
   * Admits a freshly accepted channel, or refuses it: then the channel is closed at once (a
   * line is logged, rate-limited) and null returned.
   */
  admit(channel: ByteChannel): PreauthSlot | null {
    const source = sourceAddress(channel.remote);
    const admission = this.gate.admit(source);
    if (!admission.admitted) {
      channel.close();
      const limits = this.gate.limits;
      const why = admission.reason === "source_full"
        ? `${limits.maxPendingPerSource} unauthenticated connections from ${source} already`
        : admission.reason === "full"
        ? `${limits.maxPending} unauthenticated connections pending already`
        : `${this.gate.pending} unauthenticated connections pending (early drop from ` +
          `${limits.earlyDropStart})`;
      this.#log({
        level: "warn",
        event: "preauth_refused",
        remote: channel.remote,
        message: `refused connection from ${channel.remote}: ${why}`,
      });
      return null;
    }
    let used = false;
    return {
      run: async <T>(handshake: () => Promise<T>): Promise<T> => {
        if (used) throw new TypeError("a pre-auth slot runs one handshake");
        used = true;
        const timer = setTimeout(() => channel.close(), this.gate.limits.handshakeDeadlineMs);
        try {
          return await handshake();
        } finally {
          clearTimeout(timer);
          this.gate.release(source);
        }
      },
    };
  }

  /** Stops the timer that reports suppressed lines (reporting what is pending now). */
  close(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#report(Infinity);
  }

  #log(entry: SessionLogEntry): void {
    if (!PREAUTH_EVENTS.has(entry.event)) return this.#out(entry);
    const decision = this.#throttle.record(entry.event, performance.now());
    if (decision.suppressedBefore > 0) this.#summary(entry.event, decision.suppressedBefore);
    if (decision.log) return this.#out(entry);
    this.#armFlush();
  }

  /** Reports suppressed lines once their window ended, as long as some are held. */
  #armFlush(): void {
    this.#flushTimer ??= setTimeout(() => {
      this.#flushTimer = undefined;
      this.#report(performance.now());
      if (this.#throttle.holding) this.#armFlush();
    }, this.#throttle.windowMs);
  }

  #report(nowMs: number): void {
    for (const { key, suppressed } of this.#throttle.flush(nowMs)) this.#summary(key, suppressed);
  }

  #summary(event: string, suppressed: number): void {
    this.#out({
      level: "warn",
      event: "log_suppressed",
      remote: "",
      message: `${suppressed} more ${event} lines in the last ${this.#throttle.windowMs} ms ` +
        `were not logged (rate limit before authentication)`,
    });
  }
}
