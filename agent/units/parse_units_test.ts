import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { parseRate, parseSize, UNLIMITED } from "./parse_units.ts";

Deno.test("rates in bits use SI prefixes, as tc and iperf do", () => {
  assert.equal(parseRate("--rate", "100mbit"), 12.5e6);
  assert.equal(parseRate("--rate", "100Mbit/s"), 12.5e6);
  assert.equal(parseRate("--rate", "100Mbps"), 12.5e6);
  assert.equal(parseRate("--rate", "500kbit"), 62_500);
  assert.equal(parseRate("--rate", "1gbit"), 125e6);
  assert.equal(parseRate("--rate", "1.5 Gbit/s"), 187.5e6);
});

Deno.test("rates in bytes: B is SI, iB binary; a bare number is bytes per second", () => {
  assert.equal(parseRate("--rate", "12.5MB/s"), 12.5e6);
  assert.equal(parseRate("--rate", "12.5MB"), 12.5e6);
  assert.equal(parseRate("--rate", "10MiB/s"), 10 * 2 ** 20);
  assert.equal(parseRate("--read-rate", "200kB/s"), 200_000);
  assert.equal(parseRate("--rate", "65536"), 65536);
  assert.equal(parseRate("rate", 65536), 65536);
});

Deno.test("0 and unlimited mean no limit", () => {
  for (const text of ["0", "0mbit", "0MB/s", "unlimited", 0]) {
    assert.equal(parseRate("--rate", text), UNLIMITED, String(text));
  }
});

Deno.test("ambiguous rates are refused, showing both readings", () => {
  const mb = assertThrowsCode(() => parseRate("--rate", "20Mb"), "INVALID_ARGUMENT");
  assert.match(mb.message, /--rate "20Mb" is ambiguous/);
  assert.match(mb.message, /20 Mbit\/s \(write 20mbit\)/);
  assert.match(mb.message, /20 MB\/s = 160 Mbit\/s \(write 20MB\/s\)/);
  const m = assertThrowsCode(() => parseRate("--rate", "20M"), "INVALID_ARGUMENT");
  assert.match(m.message, /20 Mbit\/s .* or as 20 MB\/s/);
  assertThrowsCode(() => parseRate("--rate", "20k"), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseRate("--rate", "20MBps"), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseRate("--rate", "20mb/s"), "INVALID_ARGUMENT");
});

Deno.test("malformed rates are refused naming the flag", () => {
  for (const text of ["fast", "", "-5mbit", "1e6", "10 furlongs", "mbit"]) {
    const err = assertThrowsCode(() => parseRate("--schedule", text), "INVALID_ARGUMENT");
    assert.match(err.message, /^--schedule /);
  }
  assertThrowsCode(() => parseRate("rate", -1), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseRate("rate", NaN), "INVALID_ARGUMENT");
});

Deno.test("sizes: a bare K/M/G is binary, KB is SI, KiB binary", () => {
  assert.equal(parseSize("--block-size", "65536"), 65536);
  assert.equal(parseSize("--block-size", "64k"), 65536);
  assert.equal(parseSize("--block-size", "64K"), 65536);
  assert.equal(parseSize("--block-size", "64KiB"), 65536);
  assert.equal(parseSize("--block-size", "4m"), 4 * 2 ** 20);
  assert.equal(parseSize("--block-size", "1MB"), 1_000_000);
  assert.equal(parseSize("--block-size", "1GiB"), 2 ** 30);
  assert.equal(parseSize("--block-size", "512B"), 512);
  assert.equal(parseSize("block-size", 4096), 4096);
});

Deno.test("sizes in bits or with fractions of a byte are refused with the two readings", () => {
  const bits = assertThrowsCode(() => parseSize("--block-size", "20Mb"), "INVALID_ARGUMENT");
  assert.match(bits.message, /write 20MB for 20×10\^6 bytes or 20MiB for 20×2\^20/);
  assertThrowsCode(() => parseSize("--block-size", "64kbit"), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseSize("--block-size", "0.5"), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseSize("--block-size", "big"), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseSize("--block-size", 1.5), "INVALID_ARGUMENT");
});

seededTest(
  "any text either parses to a non-negative rate or fails with INVALID_ARGUMENT",
  (prng) => {
    const alphabet = "0123456789.kKmMgGtTiIbB/s ptu";
    for (let i = 0; i < 2000; i++) {
      let text = "";
      const length = prng.int(10);
      for (let j = 0; j < length; j++) text += alphabet[prng.int(alphabet.length)];
      for (const parse of [parseRate, parseSize]) {
        try {
          const value = parse("--x", text);
          assert.ok(value >= 0 && !Number.isNaN(value), `${JSON.stringify(text)} → ${value}`);
        } catch (err) {
          assert.equal((err as { code?: string }).code, "INVALID_ARGUMENT", String(err));
        }
      }
    }
  },
);
