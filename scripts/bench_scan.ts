/**
 * Benchmarks the scan tracker on the evacuation path: the cut's scan of a page-cached image
 * (random data, no holes) after a small set of blocks was rewritten, with a fresh pre-filter
 * table, against `b3sum --num-threads 1` on the same file, plain sequential reads of it (in
 * Deno, as the volume-engine benchmark does, and with `dd`) and the scan without the
 * pre-filter (BLAKE3 of every block). All run in one process tree, interleaved round by
 * round, so the machine's load weighs on every contender alike. Prints one markdown table
 * (kept in docs/BENCHMARKS.md).
 *
 *     deno run -A scripts/bench_scan.ts [--size-gib 8] [--dirty-blocks 256] [--runs 5] [--dir DIR]
 *         [--baseline-tree TREE]
 *     deno run -A scripts/bench_scan.ts --sparse-gib 1024 [--dir DIR]
 *
 * `--baseline-tree` adds the scan tracker of another checkout (e.g. `git archive main | tar -x
 * -C TREE`) as a contender in the same rounds: its cut follows the same rewrite as this tree's,
 * with its own pre-filter table under the same secret, and the two go first in turn.
 *
 * The second form measures the peak resident memory of two cuts (the first builds the
 * table) of a sparse volume with 1000 data blocks, in a child process.
 *
 * Files go under DIR (default: a new directory in /tmp), which must have room for the image;
 * they are deleted at the end.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { blockEntries } from "../agent/core/mod.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { ManifestFile } from "../agent/volume/manifest_file.ts";
import { newVolumeIdentity } from "../agent/volume/volume_identity.ts";
import { Prng } from "../fixtures/prng.ts";
import { ScanTracker } from "../plugins/tracker-scan/scan_tracker.ts";
import { median } from "./_bench_timing.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    "size-gib": { type: "string", default: "8" },
    "dirty-blocks": { type: "string", default: "256" },
    runs: { type: "string", default: "5" },
    dir: { type: "string" },
    "sparse-gib": { type: "string" },
    "sparse-child": { type: "string" },
    "baseline-tree": { type: "string" },
  },
});

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const BLOCK = 64 * 1024;
const CHUNK = 64 * MiB;
const prng = new Prng(20261201);
const fs = new DenoFileSystem();

async function loadAverage(): Promise<string> {
  return (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
}

async function scan(tracker: ScanTracker): Promise<number> {
  const start = performance.now();
  const cut = await tracker.cut();
  const ms = performance.now() - start;
  await cut.release();
  return ms;
}

/** A tracker over `dir`'s image and manifest, with the pre-filter unless `prefilter` is false. */
async function trackerIn(dir: string, sizeBytes: number, prefilter: boolean) {
  const identity = newVolumeIdentity("bench", sizeBytes, BLOCK);
  const manifest = await ManifestFile.open(fs, `${dir}/manifest`, sizeBytes / BLOCK, {
    create: true,
  });
  const tracker: ScanTracker = new ScanTracker({
    imagePath: `${dir}/image.raw`,
    identity,
    manifest,
    baselineGeneration: 0,
    prefilter: prefilter
      ? { tablePath: `${dir}/scan.prefilter`, secret: new Uint8Array(32).fill(7) }
      : undefined,
  });
  return { tracker, manifest };
}

/** Child mode: two cuts of the sparse volume in `dir`; prints peak resident memory. */
async function sparseChild(dir: string, sizeBytes: number): Promise<void> {
  const { tracker, manifest } = await trackerIn(dir, sizeBytes, true);
  const first = await scan(tracker);
  const second = await scan(tracker);
  await tracker.close();
  manifest.close();
  const status = await Deno.readTextFile("/proc/self/status");
  console.log(JSON.stringify({
    vmHwmKiB: Number(/VmHWM:\s+(\d+)/.exec(status)![1]),
    firstS: first / 1000,
    secondS: second / 1000,
  }));
}

async function sparse(dir: string, sizeGiB: number): Promise<void> {
  const sizeBytes = sizeGiB * GiB;
  const file = await Deno.open(`${dir}/image.raw`, { write: true, create: true, truncate: true });
  await file.truncate(sizeBytes);
  const data = new Uint8Array(BLOCK);
  for (let i = 0; i < 1000; i++) {
    await file.seek(prng.int(sizeBytes / BLOCK) * BLOCK, Deno.SeekMode.Start);
    await file.write(prng.fill(data));
  }
  file.close();
  const child = await new Deno.Command("/usr/bin/time", {
    args: [
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--sparse-child",
      dir,
      "--sparse-gib",
      String(sizeGiB),
    ],
    stderr: "inherit",
  }).output();
  if (!child.success) throw new Error("the sparse child failed");
  const report = JSON.parse(new TextDecoder().decode(child.stdout).trim().split("\n").pop()!);
  console.log(
    `sparse ${sizeGiB} GiB, 1000 data blocks, 64 KiB blocks, with the pre-filter: ` +
      `peak RSS ${(report.vmHwmKiB / 1024).toFixed(0)} MiB; first cut (builds the table) ` +
      `${report.firstS.toFixed(1)} s, second ${report.secondS.toFixed(1)} s; ` +
      `load average ${await loadAverage()}`,
  );
}

/** Writes the image (every 64 KiB block distinct) and the manifest that matches it. */
async function writeImage(image: string, sizeBytes: number, manifest: ManifestFile) {
  const chunk = prng.fill(new Uint8Array(CHUNK));
  const view = new DataView(chunk.buffer);
  const file = await Deno.open(image, { write: true, create: true, truncate: true });
  try {
    for (let at = 0; at < sizeBytes; at += CHUNK) {
      for (let b = 0; b < CHUNK; b += BLOCK) view.setFloat64(b, at + b);
      await file.write(chunk);
      await manifest.write(at / BLOCK, blockEntries(chunk, BLOCK));
    }
  } finally {
    file.close();
  }
}

/** Rewrites `count` random blocks with new random data (a guest's writes since the last scan). */
async function rewrite(image: string, blocks: number, count: number): Promise<void> {
  const file = await Deno.open(image, { write: true });
  try {
    const data = new Uint8Array(BLOCK);
    for (let i = 0; i < count; i++) {
      await file.seek(prng.int(blocks) * BLOCK, Deno.SeekMode.Start);
      await file.write(prng.fill(data));
    }
  } finally {
    file.close();
  }
}

/** CPU seconds (user + system) of each counted run of every contender, by name. */
const cpuSeconds = new Map<string, number[]>();

/** Wall milliseconds of one run of `argv`, output discarded; its CPU time goes to `name`. */
async function timeOnce(name: string, argv: string[]): Promise<number> {
  const start = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%U %S", ...argv],
    stdout: "null",
    stderr: "piped",
  }).output();
  const ms = performance.now() - start;
  const text = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) throw new Error(`${argv.join(" ")} failed: ${text}`);
  const [user, system] = text.split("\n").pop()!.split(" ").map(Number);
  cpuSeconds.set(name, [...(cpuSeconds.get(name) ?? []), user + system]);
  return ms;
}

/** Wall milliseconds of `fn`; the CPU time of this process meanwhile goes to `name`. */
async function timeHere(name: string, fn: () => Promise<unknown>): Promise<number> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  await fn();
  const ms = performance.now() - start;
  const used = process.cpuUsage(cpu);
  cpuSeconds.set(name, [...(cpuSeconds.get(name) ?? []), (used.user + used.system) / 1e6]);
  return ms;
}

async function plainRead(image: string): Promise<void> {
  const file = await Deno.open(image);
  const buffer = new Uint8Array(8 * MiB);
  while ((await file.read(buffer)) !== null) { /* discard */ }
  file.close();
}

async function dense(dir: string): Promise<void> {
  const sizeBytes = Number(flags["size-gib"]) * GiB;
  const runs = Number(flags.runs);
  const image = `${dir}/image.raw`;
  const { tracker: prefiltered, manifest } = await trackerIn(dir, sizeBytes, true);
  const plain = new ScanTracker({
    imagePath: image,
    identity: newVolumeIdentity("bench", sizeBytes, BLOCK),
    manifest,
    baselineGeneration: 0,
  });
  // The other tree's tracker: the same image, manifest and secret, a table of its own.
  const tree = flags["baseline-tree"];
  const baseline: ScanTracker | null = tree
    ? new (await import(`${tree}/plugins/tracker-scan/scan_tracker.ts`)).ScanTracker({
      imagePath: image,
      identity: newVolumeIdentity("bench", sizeBytes, BLOCK),
      manifest,
      baselineGeneration: 0,
      prefilter: { tablePath: `${dir}/baseline.prefilter`, secret: new Uint8Array(32).fill(7) },
    })
    : null;
  const setupStart = performance.now();
  await writeImage(image, sizeBytes, manifest);
  const setupS = (performance.now() - setupStart) / 1000;
  // The first scan with a pre-filter builds the table: every block is hashed.
  const firstMs = await scan(prefiltered);
  const baselineFirstMs = baseline ? await scan(baseline) : 0;
  const loadBefore = await loadAverage();
  const cuts: [string, () => Promise<number>][] = [
    ["scan", () => timeHere("scan", () => scan(prefiltered))],
  ];
  if (baseline) cuts.push(["tree", () => timeHere("tree", () => scan(baseline))]);
  const contenders: [string, () => Promise<number>][] = [
    ...cuts,
    ["b3sum", () => timeOnce("b3sum", ["b3sum", "--num-threads", "1", image])],
    ["read", () => timeHere("read", () => plainRead(image))],
    ["dd", () => timeOnce("dd", ["dd", `if=${image}`, "of=/dev/null", "bs=8M", "status=none"])],
    ["full", () => timeHere("full", () => scan(plain))],
  ];
  const times = new Map(contenders.map(([name]) => [name, [] as number[]]));
  const hashed: number[] = [];
  for (let round = 0; round <= runs; round++) {
    // The cuts follow one rewrite (a guest's writes since the last pass) and go first in turn.
    await rewrite(image, sizeBytes / BLOCK, Number(flags["dirty-blocks"]));
    const order = round % 2 === 0
      ? contenders
      : [...cuts.toReversed(), ...contenders.slice(cuts.length)];
    for (const [name, run] of order) {
      const ms = await run();
      // Round 0 warms up the page cache and the JIT; it is not counted.
      if (round > 0) times.get(name)!.push(ms);
      else cpuSeconds.delete(name);
    }
    if (round > 0) hashed.push(prefiltered.lastScan!.blocksHashed);
  }
  await prefiltered.close();
  await baseline?.close();
  await plain.close();
  manifest.close();
  const ms = (name: string) => median(times.get(name)!);
  const cpuPerGiB = (name: string) =>
    (median(cpuSeconds.get(name)!) / (sizeBytes / GiB)).toFixed(3);
  const gbps = (value: number) => `${(sizeBytes / value / 1e6).toFixed(2)} GB/s`;
  const ratios = (of: string, to: string) => times.get(to)!.map((t, i) => t / times.get(of)![i]);
  const perRound = (of: string, to: string) =>
    `${ratios(of, to).map((r) => r.toFixed(2)).join(", ")} (median ${
      median(ratios(of, to)).toFixed(2)
    })`;
  console.log(
    `\n${sizeBytes / GiB} GiB page-cached, 64 KiB blocks, ${flags["dirty-blocks"]} blocks ` +
      `rewritten before each cut (hashed per cut: ${hashed.join(", ")}); median of ${runs} ` +
      `rounds; ${navigator.hardwareConcurrency} cores; load average before ${loadBefore}, after ` +
      `${await loadAverage()}`,
  );
  console.log(
    `setup ${setupS.toFixed(1)} s; first scan (no table yet, every block hashed) ` +
      `${(firstMs / 1000).toFixed(2)} s; scan ÷ b3sum per round: ${perRound("scan", "b3sum")}`,
  );
  if (baseline) {
    console.log(
      `baseline tree ${tree}: first scan ${(baselineFirstMs / 1000).toFixed(2)} s; its scan ÷ ` +
        `b3sum per round: ${perRound("tree", "b3sum")}; this tree's scan ÷ its scan per round: ` +
        `${perRound("scan", "tree")}; CPU seconds per GiB of its scan ${cpuPerGiB("tree")}`,
    );
  }
  console.log();
  console.log(
    `CPU seconds per GiB (user + system, all threads): scan ${cpuPerGiB("scan")}, b3sum ` +
      `${cpuPerGiB("b3sum")}, Deno read ${cpuPerGiB("read")}, dd ${cpuPerGiB("dd")}, scan ` +
      `without pre-filter ${cpuPerGiB("full")}\n`,
  );
  console.log("| what | presync | baseline | ratio (presync faster when > 1) |");
  console.log("| --- | --- | --- | --- |");
  const scanMs = ms("scan");
  for (
    const [name, what] of [
      ["b3sum", "b3sum --num-threads 1"],
      ...(baseline ? [["tree", `the scan of ${tree}`]] : []),
      ["read", "plain sequential read (Deno, 8 MiB buffer)"],
      ["dd", "dd bs=8M of=/dev/null"],
      ["full", "scan without pre-filter (BLAKE3 of every block)"],
    ]
  ) {
    console.log(
      `| evacuation-path scan, ${sizeBytes / GiB} GiB | ${gbps(scanMs)} | ${what}: ` +
        `${gbps(ms(name))} | ${(ms(name) / scanMs).toFixed(2)}× |`,
    );
  }
  console.log(
    `\nscan cost on the evacuation path: ${(scanMs / 1000 / (sizeBytes / GiB)).toFixed(3)} s per ` +
      `GiB (without the pre-filter: ${
        (ms("full") / 1000 / (sizeBytes / GiB)).toFixed(3)
      } s per GiB)`,
  );
}

if (flags["sparse-child"]) {
  await sparseChild(flags["sparse-child"], Number(flags["sparse-gib"]) * GiB);
  Deno.exit(0);
}
const dir = flags.dir ?? await Deno.makeTempDir({ prefix: "presync-bench-scan-" });
try {
  if (flags["sparse-gib"]) {
    await sparse(dir, Number(flags["sparse-gib"]));
  } else {
    const out = await new Deno.Command("df", { args: ["-B1", "--output=avail", dir] }).output();
    const free = Number(new TextDecoder().decode(out.stdout).trim().split("\n").pop());
    const needed = Number(flags["size-gib"]) * GiB * 1.05;
    if (free < needed) {
      throw new Error(
        `${dir} has ${(free / GiB).toFixed(1)} GiB free; the image needs ${flags["size-gib"]}`,
      );
    }
    await dense(dir);
  }
} finally {
  for (
    const name of [
      "image.raw",
      "manifest",
      "scan.prefilter",
      "scan.prefilter.tmp",
      "baseline.prefilter",
    ]
  ) {
    await Deno.remove(`${dir}/${name}`).catch(() => {});
  }
  if (!flags.dir) await Deno.remove(dir, { recursive: true });
}
