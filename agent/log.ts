import type { SessionLogger } from "./wire/session_logger.ts";

/** Severity of a log line. */
export type LogLevel = "info" | "warn" | "error";

/** Writes one log line: a stable event name and fields. */
export type Logger = (level: LogLevel, event: string, fields?: Record<string, unknown>) => void;

/** Where log lines go: stderr, one write per line, unless a progress board draws there. */
export type LogSink = (line: string) => void;

const encoder = new TextEncoder();

function stderrLine(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/**
 * A logger writing to `sink` (default stderr): JSON lines (`json`, for journald and log
 * shippers) or `time level event key=value …` lines (`text`); fields whose value is
 * undefined are left out of both.
 */
export function createLogger(format: "json" | "text", sink: LogSink = stderrLine): Logger {
  return (level, event, fields = {}) => {
    const time = new Date().toISOString();
    const line = format === "json"
      ? JSON.stringify({ time, level, event, ...fields })
      : `${time} ${level} ${event}${
        Object.entries(fields).filter(([, v]) => v !== undefined).map(([k, v]) =>
          ` ${k}=${typeof v === "string" ? v : JSON.stringify(v)}`
        ).join("")
      }`;
    sink(line);
  };
}

/** The session layer's log lines, through a presync logger. */
export function sessionLoggerOf(log: Logger): SessionLogger {
  return (entry) => log(entry.level, entry.event, { remote: entry.remote, message: entry.message });
}
