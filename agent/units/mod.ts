/**
 * Units of presync's flags, config files and human output, in one place so that every flag
 * reads a size or a rate the same way.
 *
 * - **size**: a whole number of bytes. `65536`, `64k`/`64K` (KiB, as dd, truncate, qemu-img
 *   and zfs read it), `64KiB`, `1MB` (10^6), `1MiB` (2^20).
 * - **rate**: bytes per second on the link or the disk. `100mbit`, `100Mbit/s`, `100Mbps`
 *   (bits, SI prefixes as tc and iperf use them), `12.5MB/s` (bytes, SI), `10MiB/s` (bytes,
 *   binary), a bare number is bytes per second, `0` or `unlimited` means no limit. Forms
 *   that tools read differently (`20Mb`, `20M`) are refused with both readings.
 * - human output: data in binary bytes (`1.5 GiB`), link speeds in SI bits per second
 *   (`95.2 Mbit/s`).
 *
 * @module
 */

export { formatBitRate, formatBytes } from "./format_units.ts";
export { parseRate, parseSize, UNLIMITED } from "./parse_units.ts";
