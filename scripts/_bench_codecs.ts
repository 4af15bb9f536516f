/**
 * Codec benchmark, called by `scripts/bench_core.ts` (and runnable alone:
 * `deno run -A scripts/_bench_codecs.ts [MiB]`). Measures on the same data in the same run:
 *
 * - `zstd-native`, `zstd-native-nocheck` (checksum off: the checksum's cost) and `zstd-wasm`,
 *   compressing 64 KiB blocks one by one, as presync does (`/64KiB`);
 * - `frames:zstd-native`: the same through `encodeBlockFrame`/`decodeBlockFrame`, so zero
 *   markers and raw fallback count, as on the wire;
 * - the same codecs on the whole buffer at once, for reference (`/whole`);
 * - the reference `zstd` CLI (`zstd -L -T1` on a temporary file, timing the process,
 *   start-up included; `zstd -d` to /dev/null), skipped when `zstd` is not on PATH.
 *
 * Levels 1 and 3, after an untimed warm-up. Each figure is the median of 3 runs. MB/s are 10^6 bytes of *uncompressed*
 * data per second in both directions; ratio is uncompressed / compressed bytes.
 *
 * @module
 */

import { decodeBlockFrame, encodeBlockFrame } from "../agent/codec/block_frame.ts";
import type { Codec } from "../agent/codec/codec.ts";
import { createZstdCodec } from "../plugins/codec-zstd/mod.ts";
import { createZstdWasmCodec } from "../plugins/codec-zstd-wasm/mod.ts";
import { median } from "./_bench_timing.ts";

/** One measured configuration. */
export interface Row {
  /** Implementation and granularity, e.g. `zstd-native/64KiB`, `zstd-cli/whole`. */
  name: string;
  /** zstd compression level. */
  level: number;
  /** Uncompressed megabytes (10^6 bytes) compressed per second, median of 3. */
  compressMBps: number;
  /** Uncompressed megabytes (10^6 bytes) produced by decompression per second, median of 3. */
  decompressMBps: number;
  /** Uncompressed bytes / compressed bytes (higher is better). */
  ratio: number;
}

const BLOCK = 64 * 1024;
const LEVELS = [1, 3];
const REPEATS = 3;

function mbps(bytes: number, ms: number): number {
  return Math.round((bytes / 1e6) / (ms / 1000) * 10) / 10;
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

interface Pass {
  /** Compresses everything; returns the compressed parts. */
  compress(): Uint8Array[];
  /** Decompresses the parts `compress` returned. */
  decompress(parts: Uint8Array[]): void;
}

function measure(name: string, level: number, bytes: number, pass: Pass): Row {
  const compressMs: number[] = [];
  const decompressMs: number[] = [];
  let compressed = 0;
  for (let run = 0; run < REPEATS; run++) {
    let started = performance.now();
    const parts = pass.compress();
    compressMs.push(performance.now() - started);
    compressed = parts.reduce((sum, part) => sum + part.length, 0);
    started = performance.now();
    pass.decompress(parts);
    decompressMs.push(performance.now() - started);
  }
  return {
    name,
    level,
    compressMBps: mbps(bytes, median(compressMs)),
    decompressMBps: mbps(bytes, median(decompressMs)),
    ratio: round2(bytes / compressed),
  };
}

function blocksOf(data: Uint8Array): Uint8Array[] {
  const blocks: Uint8Array[] = [];
  for (let offset = 0; offset < data.length; offset += BLOCK) {
    blocks.push(data.subarray(offset, offset + BLOCK));
  }
  return blocks;
}

function perBlock(codec: Codec, blocks: Uint8Array[], level: number): Pass {
  return {
    compress: () => blocks.map((block) => codec.compress(block, level)),
    decompress: (parts) => parts.forEach((part, i) => codec.decompress(part, blocks[i].length)),
  };
}

function perFrame(codec: Codec, blocks: Uint8Array[], level: number): Pass {
  const options = { maxRawLength: BLOCK, codecs: [codec] };
  return {
    compress: () => blocks.map((block) => encodeBlockFrame(block, codec, { level })),
    decompress: (parts) => parts.forEach((frame) => decodeBlockFrame(frame, options)),
  };
}

function whole(codec: Codec, data: Uint8Array, level: number): Pass {
  return {
    compress: () => [codec.compress(data, level)],
    decompress: (parts) => void codec.decompress(parts[0], data.length),
  };
}

function cliAvailable(): boolean {
  try {
    return new Deno.Command("zstd", { args: ["--version"], stdout: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

function runCli(args: string[]): void {
  const out = new Deno.Command("zstd", { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`zstd ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

function cliRow(input: string, output: string, bytes: number, level: number): Row {
  return measure("zstd-cli/whole", level, bytes, {
    compress: () => {
      runCli([`-${level}`, "-T1", "-q", "-f", "-o", output, input]);
      return [new Uint8Array(Deno.statSync(output).size)]; // only its length is used
    },
    decompress: () => runCli(["-d", "-q", "-c", output]),
  });
}

/**
 * Measures zstd-native, zstd-wasm and the `zstd` CLI on `data` at levels 1 and 3, in 64 KiB
 * blocks (as presync uses the codecs) and on the whole buffer; returns one row per
 * configuration. Takes about 10 s per 64 MiB on one core.
 *
 * @example
 * ```ts ignore
 * import { benchCodecs } from "./_bench_codecs.ts";
 * import { mixedData } from "../fixtures/data.ts";
 * import { Prng } from "../fixtures/prng.ts";
 * console.table(await benchCodecs(mixedData(new Prng(1), 64 << 20)));
 * ```
 */
export async function benchCodecs(data: Uint8Array): Promise<Row[]> {
  const native = createZstdCodec();
  const nativeNoCheck = createZstdCodec({ checksum: false });
  const wasm = await createZstdWasmCodec();
  const blocks = blocksOf(data);
  // Untimed pass over the first 4 MiB so the JIT has compiled every path before timing.
  const warmUpBlocks = blocks.slice(0, 64);
  for (const codec of [native, nativeNoCheck, wasm]) {
    for (const level of LEVELS) {
      for (
        const pass of [perBlock(codec, warmUpBlocks, level), perFrame(codec, warmUpBlocks, level)]
      ) {
        pass.decompress(pass.compress());
      }
    }
  }
  const rows: Row[] = [];
  for (const level of LEVELS) {
    rows.push(measure("zstd-native/64KiB", level, data.length, perBlock(native, blocks, level)));
    rows.push(
      measure(
        "zstd-native-nocheck/64KiB",
        level,
        data.length,
        perBlock(nativeNoCheck, blocks, level),
      ),
    );
    rows.push(measure("zstd-wasm/64KiB", level, data.length, perBlock(wasm, blocks, level)));
    rows.push(
      measure("frames:zstd-native/64KiB", level, data.length, perFrame(native, blocks, level)),
    );
    rows.push(measure("zstd-native/whole", level, data.length, whole(native, data, level)));
    rows.push(measure("zstd-wasm/whole", level, data.length, whole(wasm, data, level)));
  }
  if (cliAvailable()) {
    const dir = await Deno.makeTempDir({ prefix: "presync_bench_codecs_" });
    try {
      const input = `${dir}/data`;
      await Deno.writeFile(input, data);
      for (const level of LEVELS) rows.push(cliRow(input, `${dir}/data.zst`, data.length, level));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return rows;
}

if (import.meta.main) {
  const { mixedData } = await import("../fixtures/data.ts");
  const { Prng, seedFromEnv } = await import("../fixtures/prng.ts");
  const mib = Number(Deno.args[0] ?? 64);
  const seed = seedFromEnv();
  console.log(`${mib} MiB of mixedData, seed ${seed}`);
  console.table(await benchCodecs(mixedData(new Prng(seed), mib * 1024 * 1024)));
}
