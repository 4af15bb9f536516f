import { ErrorCode, PresyncError } from "../errors.ts";

/** Flag values: what `parseArgs` returns, and what a config file holds. */
export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/**
 * Merges `--config FILE` (a JSON object whose keys are flag names, e.g.
 * `{"to": "10.0.0.2:7700", "volume": ["db=/var/lib/db.img"], "rate": "20mbit"}`) under the
 * flags given on the command line. Unknown keys are refused, naming the key.
 */
export async function withConfigFile(values: FlagValues, known: string[]): Promise<FlagValues> {
  const path = values.config;
  if (typeof path !== "string") return values;
  let config: unknown;
  try {
    config = JSON.parse(await Deno.readTextFile(path));
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `cannot read config file ${path}: ${cause}`,
      { cause },
    );
  }
  if (!config || typeof config !== "object" || Array.isArray(config)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `config file ${path} must hold a JSON object`,
    );
  }
  const merged: FlagValues = {};
  for (const [key, value] of Object.entries(config)) {
    if (!known.includes(key) || key === "config") {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `config file ${path}: unknown key ${JSON.stringify(key)} (known: ${
          known.filter((k) => k !== "config").join(", ")
        })`,
      );
    }
    const ok = typeof value === "string" || typeof value === "boolean" ||
      (Array.isArray(value) && value.every((x) => typeof x === "string"));
    if (!ok) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `config file ${path}: key ${key} must be a string, boolean or list of strings`,
      );
    }
    merged[key] = typeof value === "number" ? String(value) : value;
  }
  for (const [key, value] of Object.entries(values)) if (value !== undefined) merged[key] = value;
  return merged;
}
