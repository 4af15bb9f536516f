import { ErrorCode, PresyncError } from "../errors.ts";

/** The rate {@linkcode parseRate} returns for `0` and `unlimited`. */
export const UNLIMITED = Infinity;

const SI: Record<string, number> = { "": 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
const BINARY: Record<string, number> = { ki: 2 ** 10, mi: 2 ** 20, gi: 2 ** 30, ti: 2 ** 40 };

/** A number and the letters after it: `12.5MB/s` → 12.5, `MB/s`. */
function split(what: string, text: string | number): { value: number; unit: string } {
  if (typeof text === "number") {
    if (!Number.isFinite(text) || text < 0) throw invalid(what, String(text));
    return { value: text, unit: "" };
  }
  const match = /^(\d+(?:\.\d+)?)\s*([a-z/]*)$/i.exec(text.trim());
  if (!match) throw invalid(what, text);
  return { value: Number(match[1]), unit: match[2] };
}

function invalid(what: string, text: string, hint = ""): PresyncError {
  return new PresyncError(
    ErrorCode.INVALID_ARGUMENT,
    `${what} ${JSON.stringify(text)} is not a ${what.endsWith("rate") ? "rate" : "size"}${hint}`,
  );
}

/**
 * Parses a rate into bytes per second: `100mbit` (= 12.5e6), `100Mbit/s`, `100Mbps`,
 * `12.5MB/s`, `10MiB/s`, `65536` (bytes per second), `0` or `unlimited`
 * ({@linkcode UNLIMITED}). Ambiguous forms (`20Mb`, `20M`) are refused with both readings.
 * `what` names the flag or key in messages (e.g. `--rate`).
 *
 * @example
 * ```ts
 * import { parseRate } from "./parse_units.ts";
 * console.assert(parseRate("--rate", "100mbit") === 12_500_000);
 * console.assert(parseRate("--rate", "10MiB/s") === 10 * 2 ** 20);
 * ```
 */
export function parseRate(what: string, text: string | number): number {
  if (typeof text === "string" && text.trim().toLowerCase() === "unlimited") return UNLIMITED;
  const { value, unit } = split(what, text);
  const examples = ": write it as 100mbit, 12.5MB/s, 10MiB/s, or 0 for unlimited";
  if (unit === "") return value === 0 ? UNLIMITED : value;
  // "bps" is bits only with a small b: "MBps" is read as bytes by some tools.
  const bits = /^(k|m|g|t|ki|mi|gi|ti)?(?:bit|bit\/s|bps)$/i.exec(unit);
  if (bits && !unit.endsWith("Bps")) {
    const prefix = (bits[1] ?? "").toLowerCase();
    const bitsPerSecond = value * (SI[prefix] ?? BINARY[prefix]);
    return bitsPerSecond === 0 ? UNLIMITED : bitsPerSecond / 8;
  }
  const bytes = /^(k|m|g|t|ki|mi|gi|ti)?B(?:\/s)?$/i.exec(unit);
  if (bytes && unit.replace(/\/s$/, "").endsWith("B")) {
    const prefix = (bytes[1] ?? "").toLowerCase();
    const bytesPerSecond = value * (SI[prefix] ?? BINARY[prefix]);
    return bytesPerSecond === 0 ? UNLIMITED : bytesPerSecond;
  }
  const ambiguous = /^(k|m|g|t)(b(?:\/s)?|bps)?$/i.exec(unit);
  if (ambiguous) {
    const p = ambiguous[1].toLowerCase();
    const big = p === "k" ? "k" : p.toUpperCase();
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${what} ${JSON.stringify(String(text))} is ambiguous: it reads as ${value} ${big}bit/s ` +
        `(write ${value}${p}bit) or as ${value} ${big}B/s = ${value * 8} ${big}bit/s ` +
        `(write ${value}${big}B/s)`,
    );
  }
  throw invalid(what, String(text), examples);
}

/**
 * Parses a size into a whole number of bytes: `65536`, `64k`/`64K`/`64KiB` (65536: a bare
 * K, M, G or T is binary, as dd, truncate, qemu-img and zfs read it), `1MB` (10^6), `1MiB`.
 * Bits (`20Mb`, `20mbit`) are refused: a size is in bytes.
 *
 * @example
 * ```ts
 * import { parseSize } from "./parse_units.ts";
 * console.assert(parseSize("--block-size", "64k") === 65536);
 * console.assert(parseSize("--block-size", "1MB") === 1_000_000);
 * ```
 */
export function parseSize(what: string, text: string | number): number {
  const { value, unit } = split(what, text);
  const match = /^(?:([kmgt])(i?B)?|B)?$/i.exec(unit);
  const bytesUnit = match && (match[2] === undefined || /^i?B$/.test(match[2]));
  if (!match || !bytesUnit) {
    const letter = /^([kmgt])/i.exec(unit)?.[1];
    const hint = letter
      ? ` (a size is in bytes: write ${value}${letter.toUpperCase()}B for ${value}×10^${
        { k: 3, m: 6, g: 9, t: 12 }[letter.toLowerCase()]
      } bytes or ${value}${letter.toUpperCase()}iB for ${value}×2^${
        { k: 10, m: 20, g: 30, t: 40 }[letter.toLowerCase()]
      })`
      : ": write it as 65536, 64k, 64KiB or 1MB";
    throw invalid(what, String(text), hint);
  }
  const prefix = (match[1] ?? "").toLowerCase();
  const scale = match[2] === "B" ? SI[prefix] : prefix === "" ? 1 : BINARY[`${prefix}i`];
  const bytes = value * scale;
  if (!Number.isSafeInteger(bytes)) {
    throw invalid(what, String(text), ": it must come to a whole number of bytes");
  }
  return bytes;
}
