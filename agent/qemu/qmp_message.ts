import { ErrorCode, PresyncError } from "../errors.ts";

/** QEMU's version as its QMP greeting states it. */
export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
  /** Distribution package string, e.g. `Debian 1:7.2+dfsg-7`. */
  package: string;
}

/** A message QEMU sends on a QMP socket, decoded and validated. */
export type QmpMessage =
  | { kind: "greeting"; version: QemuVersion; capabilities: string[] }
  | { kind: "return"; id: string | null; value: unknown }
  | { kind: "error"; id: string | null; errorClass: string; desc: string }
  | { kind: "event"; event: string; data: Record<string, unknown>; timestampMs: number };

function violation(message: string, line: string): PresyncError {
  const shown = line.length > 200 ? `${line.slice(0, 200)}…` : line;
  return new PresyncError(
    ErrorCode.PROTOCOL_VIOLATION,
    `QMP peer: ${message}; received ${shown}; is the socket QEMU's QMP monitor (-qmp)?`,
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function idOf(message: Record<string, unknown>, line: string): string | null {
  if (!("id" in message)) return null;
  if (typeof message.id !== "string") throw violation("a reply id that is not ours", line);
  return message.id;
}

/**
 * Decodes one QMP line (a JSON object) into a {@linkcode QmpMessage}. Pure: throws
 * `PROTOCOL_VIOLATION` for anything that is not a greeting, reply or event of the QEMU
 * Machine Protocol (QEMU's `docs/interop/qmp-spec`).
 */
export function decodeQmpMessage(line: string): QmpMessage {
  let message: unknown;
  try {
    message = JSON.parse(line);
  } catch {
    throw violation("a line that is not JSON", line);
  }
  if (!isObject(message)) throw violation("a line that is not a JSON object", line);
  if ("QMP" in message) {
    const qmp = message.QMP;
    const version = isObject(qmp) && isObject(qmp.version) ? qmp.version : null;
    const numbers = version && isObject(version.qemu) ? version.qemu : null;
    if (
      !isObject(qmp) || !numbers || !Array.isArray(qmp.capabilities) ||
      !["major", "minor", "micro"].every((k) => Number.isInteger(numbers[k]))
    ) {
      throw violation("a malformed greeting", line);
    }
    return {
      kind: "greeting",
      version: {
        major: numbers.major as number,
        minor: numbers.minor as number,
        micro: numbers.micro as number,
        package: typeof version!.package === "string" ? version!.package : "",
      },
      capabilities: qmp.capabilities.filter((c): c is string => typeof c === "string"),
    };
  }
  if ("return" in message) {
    return { kind: "return", id: idOf(message, line), value: message.return };
  }
  if ("error" in message) {
    const error = message.error;
    if (!isObject(error) || typeof error.class !== "string" || typeof error.desc !== "string") {
      throw violation("a malformed error reply", line);
    }
    return { kind: "error", id: idOf(message, line), errorClass: error.class, desc: error.desc };
  }
  if ("event" in message) {
    const { event, data, timestamp } = message;
    if (typeof event !== "string" || (data !== undefined && !isObject(data))) {
      throw violation("a malformed event", line);
    }
    const t = isObject(timestamp) ? timestamp : {};
    const seconds = typeof t.seconds === "number" ? t.seconds : 0;
    const micros = typeof t.microseconds === "number" ? t.microseconds : 0;
    return { kind: "event", event, data: data ?? {}, timestampMs: seconds * 1000 + micros / 1000 };
  }
  throw violation("a message that is neither greeting, reply nor event", line);
}

/** The line (with its newline) that runs `command` with `args` under `id`. Pure. */
export function encodeQmpCommand(
  id: string,
  command: string,
  args?: Record<string, unknown>,
): string {
  return JSON.stringify(
    args ? { execute: command, arguments: args, id } : { execute: command, id },
  ) +
    "\n";
}
