import type { PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Session } from "../wire/session.ts";
import { Backoff } from "./backoff.ts";
import { asPresyncError, isProcessFatal } from "./volume_faults.ts";

/** Options of {@linkcode runConnectionLoop}. */
export interface ConnectionLoopOptions {
  /** Connects and authenticates a new session. */
  connect(): Promise<Session>;
  /**
   * Runs one session until it ends. Whatever it throws (or returning at all) is the end of
   * the session: a link error, after which the loop reconnects.
   */
  serve(session: Session): Promise<void>;
  /** True once the agent stops. */
  stopped(): boolean;
  /** Waits `ms`, waking early when something changes (stop). */
  sleep(ms: number): Promise<void>;
  /** Called after every session (or failed attempt), before the backoff. */
  onDown?(error: PresyncError): void;
  log: Logger;
  /** Uniform in [0, 1) (default `Math.random`), for the backoff's jitter. */
  random?: () => number;
}

/**
 * The source agent's connection loop: connect, serve the session until it ends, reconnect
 * with exponential backoff and jitter (the backoff starts over after every session that
 * came up). Runs until `stopped()`, or until a process-wide fault (wrong key, untrusted
 * server, another protocol version), which it returns; volume faults never reach it.
 */
export async function runConnectionLoop(
  options: ConnectionLoopOptions,
): Promise<PresyncError | null> {
  const { log } = options;
  const random = options.random ?? Math.random;
  const backoff = new Backoff();
  while (!options.stopped()) {
    let error: PresyncError;
    try {
      const session = await options.connect();
      backoff.reset();
      await options.serve(session);
      error = asPresyncError(new Error("the session ended"));
    } catch (err) {
      error = asPresyncError(err);
    }
    if (options.stopped()) break;
    if (isProcessFatal(error)) {
      log("error", "agent_stopped", { code: error.code, error: error.message });
      return error;
    }
    options.onDown?.(error);
    const retryInMs = Math.round(backoff.next(random()));
    log("warn", "link_down", { code: error.code, error: error.message, retryInMs });
    await options.sleep(retryInMs);
  }
  return null;
}
