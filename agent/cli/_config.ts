import { ErrorCode, PresyncError } from "../errors.ts";
import { parseRate, parseSize } from "../units/mod.ts";
import type { FlagOptions } from "./_args.ts";
import { closest } from "./_suggest.ts";

/** The flags whose config-file value may be a JSON number: seconds, sizes and rates. */
export const NUMERIC_FLAGS: ReadonlySet<string> = new Set([
  "interval",
  "idle-timeout",
  "delay-target",
  "block-size",
  "rate",
  "read-rate",
  "stripes",
  "evacuate-timeout",
]);

/** Flag values: what `parseArgs` returns, and what a config file holds once read. */
export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/**
 * The settings of a daemon (`serve`, `agent`): its flags merged over `--config FILE`, each
 * value remembering where it came from so that an error names the flag or the config key.
 * Every getter validates; a bad value is an `INVALID_ARGUMENT` (exit 2).
 */
export class Settings {
  /** The merged values, strings as on a command line (numbers from a config file too). */
  readonly values: FlagValues;
  readonly #configPath: string | undefined;
  readonly #fromConfig: ReadonlySet<string>;

  constructor(values: FlagValues, configPath?: string, fromConfig: Iterable<string> = []) {
    this.values = values;
    this.#configPath = configPath;
    this.#fromConfig = new Set(fromConfig);
  }

  /** How messages name `key`: `--rate`, or `config /etc/presync/agent.json: rate`. */
  name(key: string): string {
    return this.#fromConfig.has(key) ? `config ${this.#configPath}: ${key}` : `--${key}`;
  }

  /** A string value, or `fallback`. */
  text(key: string): string | undefined;
  text(key: string, fallback: string): string;
  text(key: string, fallback?: string): string | undefined {
    const value = this.values[key];
    return typeof value === "string" ? value : fallback;
  }

  /** A string value that must be there: `what` says what it is (e.g. `HOST:PORT`). */
  need(command: string, key: string, what: string): string {
    const value = this.text(key);
    if (value === undefined || value === "") {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `--${key} ${what} is required (on the command line, or as "${key}" in the --config ` +
          `file); see presync help ${command}`,
      );
    }
    return value;
  }

  /** A repeatable value as a list (empty when absent). */
  list(key: string): string[] {
    const value = this.values[key];
    return Array.isArray(value) ? value : typeof value === "string" ? [value] : [];
  }

  /** A switch. */
  flag(key: string): boolean {
    return this.values[key] === true;
  }

  /** One of `choices`, or `fallback`. */
  choice<T extends string>(key: string, choices: readonly T[], fallback: T): T {
    const value = this.text(key, fallback);
    if (!choices.includes(value as T)) {
      throw this.#invalid(key, value, `one of ${choices.join(", ")}`);
    }
    return value as T;
  }

  /**
   * A number (fractions allowed) of `unit` (e.g. `seconds`) within `[min, max]`, or
   * `fallback`.
   */
  number(key: string, fallback: number, unit: string, min = 0, max = Infinity): number {
    const text = this.text(key);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (text.trim() === "" || !(value >= min && value <= max)) {
      const range = max === Infinity ? `${min} or more` : `from ${min} to ${max}`;
      throw this.#invalid(key, text, `a number of ${unit}, ${range}`);
    }
    return value;
  }

  /** A rate in bytes per second (see `agent/units/`), or `fallback`. */
  rate(key: string, fallback: number): number {
    const text = this.text(key);
    return text === undefined ? fallback : parseRate(this.name(key), text);
  }

  /** A size in bytes (see `agent/units/`), or `fallback`. */
  size(key: string, fallback: number): number {
    const text = this.text(key);
    return text === undefined ? fallback : parseSize(this.name(key), text);
  }

  #invalid(key: string, value: string, expected: string): PresyncError {
    return new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${this.name(key)} must be ${expected}: received ${JSON.stringify(value)}`,
    );
  }
}

/**
 * Reads `--config FILE` (a JSON object whose keys are the flag names, e.g.
 * `{"to": "10.0.0.2:7700", "volume": "db=/var/lib/db.img", "interval": 30, "rate": "20mbit"}`)
 * and merges the command line's `values` over it. The file is checked against `options`
 * before anything starts: an unknown key is refused naming it (and the closest known key);
 * a repeatable flag takes a string or a list of strings; a switch takes true or false; the
 * flags in `numeric` (seconds, sizes, rates) take a number as well as a string.
 */
export async function loadSettings(
  values: FlagValues,
  options: FlagOptions,
  numeric: ReadonlySet<string>,
): Promise<Settings> {
  const path = values.config;
  if (typeof path !== "string") return new Settings(values);
  const config = await readConfig(path);
  const merged: FlagValues = {};
  for (const [key, value] of Object.entries(config)) {
    merged[key] = configValue(path, key, value, options, numeric);
  }
  const fromConfig = Object.keys(merged).filter((key) => values[key] === undefined);
  for (const [key, value] of Object.entries(values)) if (value !== undefined) merged[key] = value;
  return new Settings(merged, path, fromConfig);
}

async function readConfig(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `cannot read config file ${path}: ${cause instanceof Error ? cause.message : cause}`,
      { cause },
    );
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `config file ${path} is not valid JSON: ${cause instanceof Error ? cause.message : cause}`,
      { cause },
    );
  }
  if (!config || typeof config !== "object" || Array.isArray(config)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `config file ${path} must hold a JSON object of flag names, e.g. {"interval": 30}: ` +
        `received ${Array.isArray(config) ? "a list" : JSON.stringify(config)}`,
    );
  }
  return config as Record<string, unknown>;
}

function configValue(
  path: string,
  key: string,
  value: unknown,
  options: FlagOptions,
  numeric: ReadonlySet<string>,
): string | boolean | string[] {
  const flag = key === "config" ? undefined : options[key];
  const invalid = (expected: string) =>
    new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `config file ${path}: ${key} must be ${expected}: received ${JSON.stringify(value)}`,
    );
  if (!flag) {
    const near = closest(key, Object.keys(options).filter((k) => k !== "config"));
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `config file ${path}: unknown key ${JSON.stringify(key)}` +
        (near ? ` (did you mean "${near}"?)` : "") + `; the keys are the flag names of the command`,
    );
  }
  if (flag.type === "boolean") {
    if (typeof value !== "boolean") throw invalid("true or false");
    return value;
  }
  const scalar = (x: unknown) =>
    typeof x === "string" || (numeric.has(key) && typeof x === "number" && Number.isFinite(x));
  if (flag.multiple) {
    if (scalar(value)) return [String(value)];
    if (Array.isArray(value) && value.every(scalar)) return value.map(String);
    throw invalid("a string or a list of strings");
  }
  if (!scalar(value)) throw invalid(numeric.has(key) ? "a number or a string" : "a string");
  return String(value);
}
