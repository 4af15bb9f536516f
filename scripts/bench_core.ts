/**
 * Benchmarks the WebAssembly core and the codecs against named baselines, all measured in
 * this one run on the same data, and prints one markdown table (kept in docs/BENCHMARKS.md).
 *
 *     deno task bench            # full sizes (256 MiB hashing, 64 MiB codecs)
 *     deno task bench --quick    # smaller inputs, for a smoke run
 *
 * @module
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { hash as blake3WasmHash } from "blake3-wasm";
import {
  Bitmap,
  blake3,
  CoreBuffer,
  hashBlocks,
  prefilterBlocks,
  PrefilterKey,
  zeroBlocks,
} from "../agent/core/mod.ts";
import { mixedData } from "../fixtures/data.ts";
import { Prng } from "../fixtures/prng.ts";
import { benchCodecs } from "./_bench_codecs.ts";
import { median, timeCommand, timeMs } from "./_bench_timing.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: { quick: { type: "boolean", default: false }, runs: { type: "string", default: "5" } },
});
const RUNS = Number(flags.runs);
const MiB = 1024 * 1024;
const HASH_BYTES = (flags.quick ? 32 : 256) * MiB;
const CODEC_BYTES = (flags.quick ? 8 : 64) * MiB;
const BITMAP_BITS = 16 * 1024 * 1024;

interface Row {
  what: string;
  ours: string;
  baseline: string;
  ratio: string;
}
const rows: Row[] = [];
const gbps = (bytes: number, ms: number) => bytes / ms / 1e6;
const fmt = (value: number, unit: string) => `${value.toFixed(value < 10 ? 2 : 1)} ${unit}`;

/** Median milliseconds of `fn` over RUNS runs after one warm-up (which also tiers up WASM). */
function bench(fn: () => unknown, reps = 1): number {
  fn();
  const many = () => {
    for (let i = 0; i < reps; i++) fn();
  };
  return median(Array.from({ length: RUNS }, () => timeMs(many) / reps));
}

/** Sub-millisecond operations are timed 50 at a time. */
const FAST = 50;

function addThroughput(what: string, bytes: number, ours: number, name: string, base: number) {
  rows.push({
    what,
    ours: fmt(gbps(bytes, ours), "GB/s"),
    baseline: `${name}: ${fmt(gbps(bytes, base), "GB/s")}`,
    ratio: `${(base / ours).toFixed(2)}×`,
  });
}

function addTime(what: string, ours: number, name: string, base: number) {
  rows.push({
    what,
    ours: fmt(ours, "ms"),
    baseline: `${name}: ${fmt(base, "ms")}`,
    ratio: `${(base / ours).toFixed(1)}× faster`,
  });
}

async function which(tool: string): Promise<boolean> {
  const probe = await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).output();
  return probe.success;
}

// ---- BLAKE3 ---------------------------------------------------------------------------
const prng = new Prng(20261123);
const random = prng.fill(new Uint8Array(HASH_BYTES));
const ourBlake3 = bench(() => blake3(random));
addThroughput(
  `BLAKE3, ${HASH_BYTES / MiB} MiB`,
  HASH_BYTES,
  ourBlake3,
  "blake3-wasm 2.1.5",
  bench(() => blake3WasmHash(random)),
);
addThroughput(
  `BLAKE3 vs SHA-256, ${HASH_BYTES / MiB} MiB`,
  HASH_BYTES,
  ourBlake3,
  "node:crypto sha256",
  bench(() => createHash("sha256").update(random).digest()),
);
if (await which("b3sum")) {
  const file = await Deno.makeTempFile({ prefix: "presync-bench-" });
  await Deno.writeFile(file, random);
  const b3sum = median(await timeCommand(["b3sum", "--num-threads", "1", file], RUNS));
  await Deno.remove(file);
  addThroughput(
    `BLAKE3 vs native, ${HASH_BYTES / MiB} MiB (b3sum reads a page-cached file)`,
    HASH_BYTES,
    bench(() => blake3(random)),
    "b3sum --num-threads 1",
    b3sum,
  );
} else {
  rows.push({ what: "BLAKE3 vs native", ours: "-", baseline: "b3sum not installed", ratio: "-" });
}
for (const blockSize of [4096, 65536]) {
  addThroughput(
    `hashBlocks, ${blockSize / 1024} KiB blocks`,
    HASH_BYTES,
    bench(() => hashBlocks(random, blockSize)),
    "blake3-wasm per block",
    bench(() => {
      for (let at = 0; at < random.length; at += blockSize) {
        blake3WasmHash(random.subarray(at, at + blockSize));
      }
    }),
  );
}

// ---- Pre-filter -----------------------------------------------------------------------
{
  using key = new PrefilterKey(prng.fill(new Uint8Array(32)), 65536);
  const blake3Ms = bench(() => hashBlocks(random, 65536));
  addThroughput(
    "pre-filter (keyed NH), 64 KiB blocks, copied into WASM",
    HASH_BYTES,
    bench(() => prefilterBlocks(key, random, 65536)),
    "BLAKE3 per block (hashBlocks)",
    blake3Ms,
  );
  // In place, 2 MiB at a time from a CoreBuffer: how the scan tracker runs it.
  const piece = 2 * MiB;
  using buffer = new CoreBuffer(piece);
  buffer.view().set(random.subarray(0, piece));
  addThroughput(
    "pre-filter in place, 2 MiB pieces (the scan tracker's way)",
    piece,
    bench(() => prefilterBlocks(key, buffer.view(), 65536), FAST),
    "BLAKE3 per block, in place",
    bench(() => hashBlocks(buffer.view(), 65536), 4),
  );
}

// ---- Bitmaps --------------------------------------------------------------------------
/** A dirty set like a busy day's: about 5% of blocks, in runs of 1 to 64 blocks. */
function dirtyWords(): Uint32Array {
  const words = new Uint32Array(BITMAP_BITS / 32);
  for (let bit = 0; bit < BITMAP_BITS;) {
    bit += prng.int(1200);
    const run = 1 + prng.int(64);
    for (let i = bit; i < Math.min(bit + run, BITMAP_BITS); i++) words[i >>> 5] |= 1 << (i & 31);
    bit += run;
  }
  return words;
}
const wordsA = dirtyWords();
const wordsB = dirtyWords();
const toBitmap = (words: Uint32Array) =>
  Bitmap.fromBytes(new Uint8Array(words.buffer), BITMAP_BITS);
using a = toBitmap(wordsA);
using b = toBitmap(wordsB);
using scratchBitmap = a.clone();
const scratchWords = wordsA.slice();

function tsPopcount(words: Uint32Array): number {
  let count = 0;
  for (let i = 0; i < words.length; i++) {
    let v = words[i];
    v = v - ((v >>> 1) & 0x55555555);
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    count += Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
  }
  return count;
}

/** Runs of set bits as flat [start, length] pairs, skipping empty and full words. */
function tsExtents(words: Uint32Array): Uint32Array {
  const pairs: number[] = [];
  let start = -1;
  for (let w = 0; w < words.length; w++) {
    const word = words[w];
    if (word === 0 && start < 0) continue;
    if (word === 0xffffffff && start >= 0) continue;
    for (let bit = 0; bit < 32; bit++) {
      const set = (word >>> bit & 1) === 1;
      if (set && start < 0) start = w * 32 + bit;
      else if (!set && start >= 0) {
        pairs.push(start, w * 32 + bit - start);
        start = -1;
      }
    }
  }
  if (start >= 0) pairs.push(start, words.length * 32 - start);
  return Uint32Array.from(pairs);
}

const wasmPairs = a.extentPairs();
const tsPairs = tsExtents(wordsA);
if (wasmPairs.length !== tsPairs.length || wasmPairs.some((v, i) => v !== tsPairs[i])) {
  throw new Error("extents disagree");
}

addTime(
  "bitmap or, 16 Mi bits",
  bench(() => scratchBitmap.or(b), FAST),
  "TypeScript loop",
  bench(() => {
    for (let i = 0; i < scratchWords.length; i++) scratchWords[i] = wordsA[i] | wordsB[i];
  }, FAST),
);
addTime(
  "bitmap andNot, 16 Mi bits",
  bench(() => scratchBitmap.andNot(b), FAST),
  "TypeScript loop",
  bench(() => {
    for (let i = 0; i < scratchWords.length; i++) scratchWords[i] = wordsA[i] & ~wordsB[i];
  }, FAST),
);
addTime(
  "bitmap popcount, 16 Mi bits",
  bench(() => a.popcount(), FAST),
  "TypeScript SWAR",
  bench(() => tsPopcount(wordsA), FAST),
);
addTime(
  `bitmap extents as [start, length] pairs, 16 Mi bits (${wasmPairs.length / 2} runs)`,
  bench(() => a.extentPairs(), FAST),
  "TypeScript word scan",
  bench(() => tsExtents(wordsA), FAST),
);

// ---- Zero detection and codecs ----------------------------------------------------------
const mixed = mixedData(prng, CODEC_BYTES);
function tsZeroBlocks(data: Uint8Array, blockSize: number): Uint8Array {
  const words = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
  const out = new Uint8Array(Math.ceil(data.length / blockSize / 8));
  const perBlock = blockSize >>> 2;
  for (let block = 0; block * perBlock < words.length; block++) {
    let zero = true;
    for (let i = block * perBlock; i < (block + 1) * perBlock; i++) {
      if (words[i] !== 0) {
        zero = false;
        break;
      }
    }
    if (zero) out[block >> 3] |= 1 << (block & 7);
  }
  return out;
}
addThroughput(
  `zero detection, ${CODEC_BYTES / MiB} MiB mixed data, 64 KiB blocks`,
  CODEC_BYTES,
  bench(() => zeroBlocks(mixed, 65536)),
  "TypeScript word loop",
  bench(() => tsZeroBlocks(mixed, 65536)),
);

const codecRows = await benchCodecs(mixed);

console.log(
  `Machine: ${Deno.build.target}, ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`,
);
console.log(`Runs: median of ${RUNS} after one warm-up; ratio > 1 means presync is faster.\n`);
console.log("| what | presync | baseline | ratio |");
console.log("|---|---|---|---|");
for (const row of rows) {
  console.log(`| ${row.what} | ${row.ours} | ${row.baseline} | ${row.ratio} |`);
}
console.log(`\nCodecs on ${CODEC_BYTES / MiB} MiB of mixed data (zeros, text, random):\n`);
console.log("| codec | level | compress MB/s | decompress MB/s | ratio |");
console.log("|---|---|---|---|---|");
for (const row of codecRows) {
  console.log(
    `| ${row.name} | ${row.level} | ${row.compressMBps.toFixed(0)} | ${
      row.decompressMBps.toFixed(0)
    } | ${row.ratio.toFixed(3)} |`,
  );
}
