import { ErrorCode, PresyncError } from "./errors.ts";
import { toHex } from "./hex.ts";

/** Bytes of a pre-shared key. */
export const KEY_BYTES = 32;

/** Writes a new random key to `path` as 64 hex digits, readable by the owner only. */
export async function writeNewKey(path: string): Promise<void> {
  const key = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  await Deno.writeTextFile(path, `${toHex(key)}\n`, { mode: 0o600, createNew: true });
  await Deno.chmod(path, 0o600);
}

/** Reads a key file: 64 hex digits. Throws `INVALID_ARGUMENT` naming the file otherwise. */
export async function readKey(path: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = (await Deno.readTextFile(path)).trim();
  } catch (cause) {
    throw new PresyncError(ErrorCode.INVALID_ARGUMENT, `cannot read key file ${path}: ${cause}`, {
      cause,
    });
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `key file ${path} must hold 64 hex digits (make one with presync keygen --out FILE)`,
    );
  }
  return Uint8Array.from(text.match(/../g)!, (h) => parseInt(h, 16));
}

/** Parses `HOST:PORT` (IPv6 as `[::1]:PORT`). */
export function parseHostPort(flag: string, text: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--${flag} must be HOST:PORT such as 127.0.0.1:7700: received ${JSON.stringify(text)}`,
    );
  }
  return { hostname: match[1] ?? match[2], port };
}
