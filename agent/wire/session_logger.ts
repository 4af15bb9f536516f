/** One log line of the session layer. */
export interface SessionLogEntry {
  /** Severity. */
  level: "info" | "warn" | "error";
  /** Stable event name to filter on, e.g. `auth_failed`, `link_dead`. */
  event: string;
  /** The peer's address. */
  remote: string;
  /** What happened, for a human. */
  message: string;
}

/** Receives session log lines; inject one to route them (tests capture them). */
export type SessionLogger = (entry: SessionLogEntry) => void;

/**
 * The default logger: one JSON object per line on stderr, as the agent's other logs.
 *
 * @example
 * ```ts
 * import { stderrJsonLogger } from "./session_logger.ts";
 * stderrJsonLogger({ level: "info", event: "demo", remote: "-", message: "hello" });
 * ```
 */
export function stderrJsonLogger(entry: SessionLogEntry): void {
  const line = JSON.stringify({ time: new Date().toISOString(), ...entry }) + "\n";
  Deno.stderr.writeSync(new TextEncoder().encode(line));
}
