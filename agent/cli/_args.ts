import { parseArgs, type ParseArgsConfig } from "node:util";
import { ErrorCode, PresyncError } from "../errors.ts";

/** Parses a subcommand's arguments strictly; unknown flags are usage errors. */
export function parseCommand<T extends ParseArgsConfig["options"]>(
  command: string,
  args: string[],
  options: T,
) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${cause instanceof Error ? cause.message : cause} (see presync ${command} --help)`,
      { cause },
    );
  }
}

/** A whole number of bytes from a flag ("65536", "64k", "4m", "1g"). */
export function parseBytes(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const match = /^(\d+)([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!match) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--${flag} must be a number of bytes such as 65536, 64k or 4m: received ${
        JSON.stringify(text)
      }`,
    );
  }
  const scale = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[match[2].toLowerCase()]!;
  return Number(match[1]) * scale;
}

/** Throws a usage error unless `value` was given. */
export function required<T>(command: string, what: string, value: T | undefined): T {
  if (value === undefined || value === "") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${what} is required (see presync ${command} --help)`,
    );
  }
  return value;
}
