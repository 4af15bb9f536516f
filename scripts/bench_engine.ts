/**
 * Benchmarks the volume engine side by side with named baselines in one run, and prints
 * one markdown table (kept in docs/BENCHMARKS.md):
 *
 * - the scan tracker over a page-cached image vs `b3sum --num-threads 1` on the same file
 *   and vs a plain sequential read of it (the physical limit here);
 * - a local sync of the image after 5% of its blocks changed, vs `rsync --inplace
 *   --no-whole-file` of the same change;
 * - peak resident memory of a local sync of a large sparse volume.
 *
 *     deno run -A scripts/bench_engine.ts [--size-gib 4] [--sparse-gib 256] [--dir DIR]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ScanTracker } from "../plugins/tracker-scan/scan_tracker.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { ManifestFile } from "../agent/volume/manifest_file.ts";
import { newVolumeIdentity } from "../agent/volume/volume_identity.ts";
import { syncLocal } from "../agent/sync/local_sync.ts";
import { Prng } from "../fixtures/prng.ts";
import { median, timeCommand } from "./_bench_timing.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    "size-gib": { type: "string", default: "4" },
    "sparse-gib": { type: "string", default: "256" },
    dir: { type: "string" },
    runs: { type: "string", default: "3" },
    "sparse-child": { type: "string" },
  },
});

const GiB = 2 ** 30;
const BLOCK = 64 * 1024;

/** Child mode: sync a sparse image and report peak resident memory. */
if (flags["sparse-child"]) {
  const dir = flags["sparse-child"];
  await syncLocal({
    imagePath: `${dir}/sparse.img`,
    storeDir: `${dir}/store`,
    volume: "sparse",
    stateDir: `${dir}/state`,
  });
  const status = await Deno.readTextFile("/proc/self/status");
  console.log(JSON.stringify({ vmHwmKiB: Number(/VmHWM:\s+(\d+)/.exec(status)![1]) }));
  Deno.exit(0);
}

const runs = Number(flags.runs);
const sizeBytes = Number(flags["size-gib"]) * GiB;
const dir = flags.dir ?? await Deno.makeTempDir({ prefix: "presync-bench-engine-" });
const image = `${dir}/image.raw`;
const prng = new Prng(4242);
const fs = new DenoFileSystem();
const rows: string[] = [];
const gbps = (ms: number) => `${(sizeBytes / ms / 1e6).toFixed(2)} GB/s`;

async function timeAsync(fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  await fn();
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await fn();
    times.push(performance.now() - start);
  }
  return median(times);
}

async function which(tool: string): Promise<boolean> {
  return (await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).output()).success;
}

try {
  // ---- A page-cached image of incompressible data (every block must be hashed) ----------
  const chunk = prng.fill(new Uint8Array(64 * 1024 * 1024));
  const file = await Deno.open(image, { write: true, create: true, truncate: true });
  for (let at = 0; at < sizeBytes; at += chunk.length) {
    new DataView(chunk.buffer).setFloat64(0, at);
    await file.write(chunk);
  }
  file.close();

  const plainRead = await timeAsync(async () => {
    const f = await Deno.open(image);
    const buffer = new Uint8Array(8 * 1024 * 1024);
    while ((await f.read(buffer)) !== null) { /* discard */ }
    f.close();
  });
  const identity = newVolumeIdentity("bench", sizeBytes, BLOCK);
  const manifest = await ManifestFile.open(fs, `${dir}/manifest`, Math.ceil(sizeBytes / BLOCK), {
    create: true,
  });
  const scan = await timeAsync(async () => {
    const tracker = new ScanTracker({
      imagePath: image,
      identity,
      manifest,
      baselineGeneration: 0,
    });
    const cut = await tracker.cut();
    await cut.release();
    await tracker.close();
  });
  manifest.close();
  rows.push(
    `| scan tracker, ${sizeBytes / GiB} GiB page-cached, 64 KiB blocks | ${
      gbps(scan)
    } | plain sequential read: ${gbps(plainRead)} | ${(plainRead / scan).toFixed(2)}× |`,
  );
  if (await which("b3sum")) {
    const b3 = median(await timeCommand(["b3sum", "--num-threads", "1", image], runs));
    rows.push(
      `| scan tracker vs native BLAKE3 | ${gbps(scan)} | b3sum --num-threads 1: ${gbps(b3)} | ${
        (b3 / scan).toFixed(2)
      }× |`,
    );
  }

  // ---- Local sync after 5% of blocks changed, vs rsync of the same change --------------
  const storeDir = `${dir}/store`;
  const opts = { imagePath: image, storeDir, volume: "bench", stateDir: `${dir}/state` };
  const initialStart = performance.now();
  await syncLocal(opts);
  const initialMs = performance.now() - initialStart;
  const rsyncCopy = `${dir}/rsync-copy.raw`;
  const haveRsync = await which("rsync");
  if (haveRsync) {
    await new Deno.Command("cp", { args: ["--sparse=always", image, rsyncCopy] }).output();
  }
  const blocks = Math.ceil(sizeBytes / BLOCK);
  const f = await Deno.open(image, { write: true });
  let changed = 0;
  for (let b = 0; b < blocks; b++) {
    if (prng.int(100) >= 5) continue;
    await f.seek(b * BLOCK, Deno.SeekMode.Start);
    await f.write(prng.fill(new Uint8Array(BLOCK)));
    changed++;
  }
  f.close();
  const syncStart = performance.now();
  const [report] = await syncLocal(opts);
  const syncMs = performance.now() - syncStart;
  rows.push(
    `| first local sync, ${sizeBytes / GiB} GiB (stage + apply) | ${
      (initialMs / 1000).toFixed(1)
    } s | — | — |`,
  );
  let rsyncCell = "rsync not installed";
  let ratio = "—";
  if (haveRsync) {
    const start = performance.now();
    const out = await new Deno.Command("rsync", {
      args: ["--inplace", "--no-whole-file", "--ignore-times", image, rsyncCopy],
    }).output();
    const rsyncMs = performance.now() - start;
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    rsyncCell = `rsync --inplace --no-whole-file: ${(rsyncMs / 1000).toFixed(1)} s`;
    ratio = `${(rsyncMs / syncMs).toFixed(2)}×`;
  }
  rows.push(
    `| local sync, 5% of blocks changed (${changed} blocks, ${
      (report.bytesSent / 2 ** 20).toFixed(0)
    } MiB staged) | ${(syncMs / 1000).toFixed(1)} s | ${rsyncCell} | ${ratio} |`,
  );
  await Deno.remove(image);
  await Deno.remove(storeDir, { recursive: true });
  await Deno.remove(`${dir}/state`, { recursive: true });
  if (haveRsync) await Deno.remove(rsyncCopy);

  // ---- Peak memory of a local sync of a large sparse volume ------------------------------
  const sparseBytes = Number(flags["sparse-gib"]) * GiB;
  const sparse = await Deno.open(`${dir}/sparse.img`, { write: true, create: true });
  await sparse.truncate(sparseBytes);
  for (let i = 0; i < 1000; i++) {
    await sparse.seek(prng.int(sparseBytes / BLOCK) * BLOCK, Deno.SeekMode.Start);
    await sparse.write(prng.fill(new Uint8Array(BLOCK)));
  }
  sparse.close();
  const start = performance.now();
  const child = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--sparse-child", dir],
    stderr: "inherit",
  }).output();
  const sparseMs = performance.now() - start;
  const { vmHwmKiB } = JSON.parse(new TextDecoder().decode(child.stdout));
  rows.push(
    `| local sync of a ${sparseBytes / GiB} GiB sparse volume (1000 data blocks): peak RSS | ${
      (vmHwmKiB / 1024).toFixed(0)
    } MiB in ${(sparseMs / 1000).toFixed(0)} s | goal ≤ 200 MiB for 1 TiB | — |`,
  );
} finally {
  if (!flags.dir) await Deno.remove(dir, { recursive: true });
}

console.log(
  `Machine: ${Deno.build.target}, ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}; median of ${runs} runs after a warm-up\n`,
);
console.log("| what | presync | baseline | ratio (presync faster when > 1) |");
console.log("|---|---|---|---|");
for (const row of rows) console.log(row);
