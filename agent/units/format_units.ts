const IEC = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
const SI_BITS = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];

/**
 * A byte count for people, in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
 *
 * @example
 * ```ts
 * import { formatBytes } from "./format_units.ts";
 * console.assert(formatBytes(1536) === "1.5 KiB");
 * ```
 */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "?";
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1024 && unit < IEC.length - 1) value /= 1024, unit++;
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${IEC[unit]}`;
}

/**
 * A link speed for people, in SI bits per second, from bytes per second:
 * `12_500_000` → `100.0 Mbit/s`; `Infinity` → `unlimited`.
 *
 * @example
 * ```ts
 * import { formatBitRate } from "./format_units.ts";
 * console.assert(formatBitRate(12_500_000) === "100.0 Mbit/s");
 * ```
 */
export function formatBitRate(bytesPerSecond: number): string {
  if (bytesPerSecond === Infinity) return "unlimited";
  if (!Number.isFinite(bytesPerSecond)) return "?";
  let value = Math.max(0, bytesPerSecond) * 8;
  let unit = 0;
  while (value >= 1000 && unit < SI_BITS.length - 1) value /= 1000, unit++;
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${SI_BITS[unit]}`;
}
