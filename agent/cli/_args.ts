import { parseArgs, type ParseArgsConfig } from "node:util";
import { ErrorCode, PresyncError } from "../errors.ts";
import { closest } from "./_suggest.ts";

/** The flags of a subcommand, as `node:util` `parseArgs` declares them. */
export type FlagOptions = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses a subcommand's arguments strictly. An unknown flag, a flag without its value or a
 * switch given a value is a usage error in our words, with the closest known flag
 * ("did you mean --rate?") and where to read more.
 */
export function parseCommand<T extends FlagOptions>(command: string, args: string[], options: T) {
  const loose = parseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  for (const token of loose.tokens) {
    if (token.kind !== "option") continue;
    const flag = options[token.name];
    const given = token.rawName;
    if (!flag) {
      const near = closest(token.name, Object.keys(options));
      throw usageError(
        command,
        `unknown flag ${given}${near ? ` (did you mean --${near}?)` : ""}`,
      );
    }
    if (flag.type === "string" && (token.value === undefined || isFlag(token.value, options))) {
      throw usageError(command, `${given} needs a value`);
    }
    if (flag.type === "string" && !token.inlineValue && token.value?.startsWith("-")) {
      throw usageError(
        command,
        `${given} ${token.value}: a value that starts with - is given as ${given}=${token.value}`,
      );
    }
    if (flag.type === "boolean" && token.inlineValue) {
      throw usageError(command, `${given} is a switch and takes no value: received ${token.value}`);
    }
  }
  return parseArgs({ args, options, allowPositionals: true, strict: true });
}

function isFlag(value: string, options: FlagOptions): boolean {
  return value.startsWith("--") && value.slice(2).split("=")[0] in options;
}

function usageError(command: string, message: string): PresyncError {
  return new PresyncError(
    ErrorCode.INVALID_ARGUMENT,
    `${message}; see presync help ${command}`,
  );
}

/** Throws a usage error unless `value` was given. */
export function required<T>(command: string, what: string, value: T | undefined): T {
  if (value === undefined || value === "") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${what} is required; see presync help ${command}`,
    );
  }
  return value;
}
