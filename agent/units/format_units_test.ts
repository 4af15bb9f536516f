import assert from "node:assert/strict";
import { formatBitRate, formatBytes } from "./format_units.ts";

Deno.test("data is shown in binary bytes", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(4 * 2 ** 30), "4.0 GiB");
  assert.equal(formatBytes(-5), "0 B");
  assert.equal(formatBytes(NaN), "?");
});

Deno.test("link speeds are shown in SI bits per second", () => {
  assert.equal(formatBitRate(12_500_000), "100.0 Mbit/s");
  assert.equal(formatBitRate(100), "800 bit/s");
  assert.equal(formatBitRate(1.5e6 / 8), "1.5 Mbit/s");
  assert.equal(formatBitRate(Infinity), "unlimited");
});
