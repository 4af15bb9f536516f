/**
 * Evacuation benchmark (issue 8): evacuating a VM disk across an emulated WAN with presync
 * after background pre-synchronisation, against a full copy (`zstd -1 |` TCP) and
 * `rsync --inplace --no-whole-file` with an up-to-date basis, on the same link and the same
 * image state. Prints a markdown table; renders figures with `--out DIR`.
 *
 * ```sh
 * npx -y deno@2.9.6 run -A scripts/bench_evacuate.ts --help
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Prng } from "../fixtures/prng.ts";
import {
  type ContenderResult,
  fullCopy,
  linkName,
  type LinkPoint,
  rsyncCopy,
} from "./_evac_contenders.ts";
import {
  diffImages,
  type ImageDiff,
  sameFile,
  type WorkloadRates,
  writeImage,
} from "./_evac_data.ts";
import { makeTemplate, type PresyncRun, runPresync, type TrackerName } from "./_evac_presync.ts";
import { renderEvacuationFigures } from "./_evac_report.ts";
import type { ScheduledCut } from "./wan_emu.ts";

const MiB = 1024 * 1024;

/** Parameters of one benchmark run (see `--help` for their meaning and defaults). */
export interface BenchOptions {
  links: LinkPoint[];
  sizeBytes: number;
  zeroShare: number;
  textShare: number;
  rates: WorkloadRates;
  presyncSeconds: number;
  cutCount: number;
  cutSeconds: number;
  cutMode: "reset" | "blackhole";
  tracker: TrackerName;
  agentArgs: string[];
  /** Multipliers of the write rates for the evacuation-time-vs-write-rate sweep (first link). */
  sweep: number[];
  /** Also run the full copy and rsync at each sweep point. */
  sweepContenders: boolean;
  contenders: ("full" | "rsync")[];
  seed: number;
  /** Directory for the temporary images (a fresh subdirectory is made and removed). */
  workDir?: string;
  log?: (line: string) => void;
}

/** What one (link, write rate) point measured. */
export interface PointResult {
  link: LinkPoint;
  /** Multiplier of the write rates. */
  rateFactor: number;
  writeBytesPerSecond: number;
  presync: PresyncRun;
  /** Remaining difference between the replica's committed image and the final source. */
  diff: ImageDiff;
  /** diff.compressedBytes (4 KiB pages) / bandwidth + 2 RTT, s. */
  limitSeconds: number;
  /** Link cuts of the pre-sync phase (ms on the emulator's clock). */
  cuts: ScheduledCut[];
  full?: ContenderResult;
  rsync?: ContenderResult;
  /** Every replica byte-equal to the frozen source (checked with `cmp`, not timed). */
  equal: { presync: boolean; full?: boolean; rsync?: boolean };
}

/** Runs the whole benchmark; every temporary file and process is gone when it returns. */
export async function runBenchmark(options: BenchOptions): Promise<PointResult[]> {
  const log = options.log ?? ((line: string) => console.error(line));
  const work = await Deno.makeTempDir({ dir: options.workDir, prefix: "presync-evac-" });
  const results: PointResult[] = [];
  try {
    const template = `${work}/template`;
    await Deno.mkdir(template);
    log(`making a ${options.sizeBytes / MiB} MiB image and its initial replica`);
    let started = performance.now();
    await makeTemplate(
      template,
      options.tracker,
      (path) => writeImage(path, new Prng(options.seed), options.sizeBytes, options),
    );
    log(`  initial sync done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const points: { link: LinkPoint; factor: number; contenders: boolean }[] = [];
    for (const link of options.links) points.push({ link, factor: 1, contenders: true });
    for (const factor of options.sweep) {
      if (factor === 1) continue;
      points.push({ link: options.links[0], factor, contenders: options.sweepContenders });
    }
    for (const [i, point] of points.entries()) {
      const root = `${work}/run-${i}`;
      await Deno.mkdir(root);
      try {
        started = performance.now();
        log(`${linkName(point.link)}, write rate ×${point.factor}: pre-sync`);
        const result = await runPoint(options, template, root, point, i, log);
        results.push(result);
        log(JSON.stringify({ point: i, ...summary(result) }));
        log(`  done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      } finally {
        await Deno.remove(root, { recursive: true }).catch(() => {});
      }
    }
    return results;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

async function runPoint(
  options: BenchOptions,
  template: string,
  root: string,
  point: { link: LinkPoint; factor: number; contenders: boolean },
  index: number,
  log: (line: string) => void,
): Promise<PointResult> {
  const { link, factor } = point;
  const rates = {
    ...options.rates,
    hotBytesPerSecond: options.rates.hotBytesPerSecond * factor,
    coldBytesPerSecond: options.rates.coldBytesPerSecond * factor,
  };
  const cuts = cutSchedule(options);
  const presync = await runPresync({
    template,
    root,
    link,
    tracker: options.tracker,
    agentArgs: options.agentArgs,
    rates,
    presyncSeconds: options.presyncSeconds,
    cuts,
    prng: new Prng(options.seed + 1000 + index),
  });
  log(`  presync phases: ${presync.phases.map((p) => `${p.state} ${p.seconds} s`).join(", ")}`);
  log(
    `  presync: ${
      presync.report.seconds.toFixed(2)
    } s, predicted ${presync.before.predictedEvacuationSeconds} s`,
  );
  const diff = await diffImages(presync.basis, presync.image);
  const limitSeconds = diff.compressedBytes * 8 / link.rateBitsPerSecond + 2 * link.rttMs / 1000;
  const result: PointResult = {
    link,
    rateFactor: factor,
    writeBytesPerSecond: rates.hotBytesPerSecond + rates.coldBytesPerSecond,
    presync,
    diff,
    limitSeconds,
    cuts,
    equal: { presync: await sameFile(presync.replica, presync.image) },
  };
  if (!point.contenders) return result;
  if (options.contenders.includes("rsync")) {
    result.rsync = await rsyncCopy(presync.image, presync.basis, root, link);
    result.equal.rsync = await sameFile(result.rsync.replica, presync.image);
    log(`  rsync: ${result.rsync.seconds.toFixed(2)} s`);
  }
  if (options.contenders.includes("full")) {
    result.full = await fullCopy(presync.image, root, link);
    result.equal.full = await sameFile(result.full.replica, presync.image);
    log(`  full copy: ${result.full.seconds.toFixed(2)} s`);
  }
  return result;
}

/** The figures of a point without its samples, for logs. */
function summary(r: PointResult): Record<string, unknown> {
  return {
    link: r.link,
    rateFactor: r.rateFactor,
    limitSeconds: r.limitSeconds,
    limit64Seconds: limit64(r),
    diff: r.diff,
    presync: {
      wallSeconds: r.presync.wallSeconds,
      report: r.presync.report,
      wireBytes: r.presync.wireBytes,
      phases: r.presync.phases,
      before: r.presync.before,
    },
    rsync: r.rsync && { seconds: r.rsync.seconds, wireBytes: r.rsync.wireBytes },
    full: r.full && { seconds: r.full.seconds, wireBytes: r.full.wireBytes },
    equal: r.equal,
  };
}

/** `cutCount` cuts spread evenly over 15–75% of the pre-sync phase. */
function cutSchedule(options: BenchOptions): ScheduledCut[] {
  return Array.from({ length: options.cutCount }, (_, i) => ({
    atMs: Math.round(
      options.presyncSeconds * 1000 * (0.15 + 0.6 * (i + 0.5) / options.cutCount),
    ),
    durationMs: options.cutSeconds * 1000,
    mode: options.cutMode,
  }));
}

/** The markdown table of the main points (write-rate factor 1). */
export function markdownTable(results: PointResult[]): string {
  const rows = [
    "| link | contender | seconds | wire MB | × physical limit | vs full copy | predicted s | replica |",
    "| ---- | --------- | ------: | ------: | ---------------: | -----------: | ----------: | ------- |",
  ];
  const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
  for (const r of results.filter((r) => r.rateFactor === 1)) {
    const name = linkName(r.link);
    const vsFull = (s: number) =>
      r.full ? `${((1 - s / r.full.seconds) * 100).toFixed(1)}% shorter` : "";
    const ok = (equal: boolean | undefined, verified = true) =>
      equal && verified ? "equal" : "**DIFFERS**";
    rows.push(
      `| ${name} | physical limit | ${r.limitSeconds.toFixed(2)} | ${
        mb(r.diff.compressedBytes)
      } | 1.00× | ${vsFull(r.limitSeconds)} |  |  |`,
    );
    rows.push(
      `| ${name} | limit, 64 KiB blocks | ${limit64(r).toFixed(2)} | ${
        mb(r.diff.blockCompressedBytes)
      } | ${(limit64(r) / r.limitSeconds).toFixed(2)}× | ${vsFull(limit64(r))} |  |  |`,
    );
    const p = r.presync;
    rows.push(
      `| ${name} | presync evacuate | ${p.wallSeconds.toFixed(2)} | ${mb(p.wireBytes)} | ${
        (p.wallSeconds / r.limitSeconds).toFixed(2)
      }× | ${vsFull(p.wallSeconds)} | ${p.before.predictedEvacuationSeconds} | ${
        ok(r.equal.presync, p.report.verified)
      } |`,
    );
    for (
      const [label, c, eq] of [
        ["rsync --inplace", r.rsync, r.equal.rsync],
        ["full copy zstd -1", r.full, r.equal.full],
      ] as const
    ) {
      if (!c) continue;
      rows.push(
        `| ${name} | ${label} | ${c.seconds.toFixed(2)} | ${mb(c.wireBytes)} | ${
          (c.seconds / r.limitSeconds).toFixed(2)
        }× | ${vsFull(c.seconds)} |  | ${ok(eq)} |`,
      );
    }
  }
  return rows.join("\n");
}

/** The physical limit counted in presync's 64 KiB blocks instead of 4 KiB pages, s. */
export function limit64(r: PointResult): number {
  return r.diff.blockCompressedBytes * 8 / r.link.rateBitsPerSecond + 2 * r.link.rttMs / 1000;
}

/** The write-rate sweep as a markdown table. */
export function sweepTable(results: PointResult[]): string {
  const first = results[0]?.link;
  const rows = [
    "| write MiB/s | presync s | predicted s | limit s (4 KiB) | limit s (64 KiB) | diff MB (4 KiB, zstd) | RPO before s |",
    "| ----------: | --------: | ----------: | --------------: | ---------------: | --------------------: | -----------: |",
  ];
  const sweep = results.filter((r) => r.link === first).sort((a, b) => a.rateFactor - b.rateFactor);
  for (const r of sweep) {
    rows.push(
      `| ${(r.writeBytesPerSecond / MiB).toFixed(2)} | ${
        r.presync.wallSeconds.toFixed(2)
      } | ${r.presync.before.predictedEvacuationSeconds} | ${r.limitSeconds.toFixed(2)} | ${
        limit64(r).toFixed(2)
      } | ${(r.diff.compressedBytes / 1e6).toFixed(1)} | ${
        Number(r.presync.before.rpoSeconds).toFixed(1)
      } |`,
    );
  }
  return rows.join("\n");
}

const HELP = `bench_evacuate: presync evacuate vs full copy vs rsync over an emulated WAN

  npx -y deno@2.9.6 run -A scripts/bench_evacuate.ts [options]

  --quick               smoke run: 256 MiB, one link point (100 Mbit/s, 150 ms), 15 s
                        pre-sync, one cut, no sweep (flags given after it still apply)
  --links LIST          RATE_MBIT:RTT_MS,... (default 100:150,20:250)
  --size N              image size, e.g. 8G, 1G, 256M (default 8G)
  --zero-share P        share of 64 KiB regions left zero (default 0.5)
  --text-share P        share of the others that are text-like (default 0.5; rest random)
  --hot-rate MIB        MiB/s written into the hot set (default 1)
  --hot-set N           hot set size (default 64M)
  --cold-rate MIB       MiB/s written anywhere in the image (default 0.1)
  --presync SECONDS     pre-sync phase before "evacuate now" (default 120)
  --cuts N              link cuts during the pre-sync phase (default 2)
  --cut-seconds S       length of each cut (default 5)
  --cut-mode MODE       reset|blackhole (default reset)
  --tracker scan|nbd    how the agent finds writes (nbd: the "VM" writes through presync's NBD
                        server; default scan)
  --interval SECONDS    agent --interval (default 10)
  --rate R              agent --rate, background limit (default 0: unlimited)
  --delay-target MS     agent --delay-target (default: the agent's)
  --sweep LIST          write-rate multipliers at the first link point (default 0.25,1,4; "" none)
  --sweep-contenders    also run rsync and the full copy at each sweep point
  --contenders LIST     baselines to run: full,rsync (default both)
  --seed N              seed of the image and the workload (default 1)
  --work-dir DIR        where the temporary images go (default the system's temp dir)
  --out DIR             write the figures there (SVG, PNG), e.g. docs
  --json                print the results as JSON instead of markdown`;

function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)([kmgt]?)i?b?$/i.exec(text.trim());
  if (!match) throw new Error(`--size: expected a size such as 8G or 256M: received "${text}"`);
  const unit = { "": 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }[
    match[2].toLowerCase() as "" | "k" | "m" | "g" | "t"
  ];
  return Math.round(Number(match[1]) * unit);
}

function parseLinks(text: string): LinkPoint[] {
  return text.split(",").map((part) => {
    const [rate, rtt] = part.split(":").map(Number);
    if (!(rate > 0) || !(rtt >= 0)) {
      throw new Error(`--links: expected RATE_MBIT:RTT_MS,...: received "${text}"`);
    }
    return { rateBitsPerSecond: rate * 1e6, rttMs: rtt };
  });
}

/** Parses the command line into {@linkcode BenchOptions} (plus output flags). */
export function parseBenchArgs(
  args: string[],
): { options: BenchOptions; out?: string; json: boolean; help: boolean } {
  const quick = args.includes("--quick");
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      links: { type: "string", default: quick ? "100:150" : "100:150,20:250" },
      size: { type: "string", default: quick ? "256M" : "8G" },
      "zero-share": { type: "string", default: "0.5" },
      "text-share": { type: "string", default: "0.5" },
      "hot-rate": { type: "string", default: "1" },
      "hot-set": { type: "string", default: "64M" },
      "cold-rate": { type: "string", default: "0.1" },
      presync: { type: "string", default: quick ? "15" : "120" },
      cuts: { type: "string", default: quick ? "1" : "2" },
      "cut-seconds": { type: "string", default: quick ? "2" : "5" },
      "cut-mode": { type: "string", default: "reset" },
      tracker: { type: "string", default: "scan" },
      interval: { type: "string", default: quick ? "3" : "10" },
      rate: { type: "string", default: "0" },
      "delay-target": { type: "string" },
      sweep: { type: "string", default: quick ? "" : "0.25,1,4" },
      "sweep-contenders": { type: "boolean", default: false },
      contenders: { type: "string", default: "full,rsync" },
      seed: { type: "string", default: "1" },
      "work-dir": { type: "string" },
      out: { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const mode = values["cut-mode"];
  if (mode !== "reset" && mode !== "blackhole") {
    throw new Error(`--cut-mode: expected reset or blackhole: received "${mode}"`);
  }
  const tracker = values.tracker;
  if (tracker !== "scan" && tracker !== "nbd") {
    throw new Error(`--tracker: expected scan or nbd: received "${tracker}"`);
  }
  const contenders = values.contenders.split(",").filter((c) => c !== "");
  for (const c of contenders) {
    if (c !== "full" && c !== "rsync") {
      throw new Error(`--contenders: expected full and/or rsync: received "${c}"`);
    }
  }
  const agentArgs = ["--interval", values.interval, "--rate", values.rate];
  if (values["delay-target"]) agentArgs.push("--delay-target", values["delay-target"]);
  return {
    options: {
      links: parseLinks(values.links),
      sizeBytes: parseSize(values.size),
      zeroShare: Number(values["zero-share"]),
      textShare: Number(values["text-share"]),
      rates: {
        hotBytesPerSecond: Number(values["hot-rate"]) * MiB,
        hotSetBytes: parseSize(values["hot-set"]),
        coldBytesPerSecond: Number(values["cold-rate"]) * MiB,
      },
      presyncSeconds: Number(values.presync),
      cutCount: Number(values.cuts),
      cutSeconds: Number(values["cut-seconds"]),
      cutMode: mode,
      tracker,
      agentArgs,
      sweep: values.sweep.split(",").filter((s) => s !== "").map(Number),
      sweepContenders: values["sweep-contenders"],
      contenders: contenders as ("full" | "rsync")[],
      seed: Number(values.seed),
      workDir: values["work-dir"],
    },
    out: values.out,
    json: values.json,
    help: values.help,
  };
}

async function main(args: string[]): Promise<void> {
  const { options, out, json, help } = parseBenchArgs(args);
  if (help) {
    console.log(HELP);
    return;
  }
  const results = await runBenchmark(options);
  if (out) {
    for (const path of await renderEvacuationFigures(results, out)) {
      console.error(`wrote ${path}`);
    }
  }
  if (json) {
    console.log(JSON.stringify(results, null, 2));
    return;
  }
  console.log(markdownTable(results));
  if (results.some((r) => r.rateFactor !== 1)) console.log(`\n${sweepTable(results)}`);
}

if (import.meta.main) await main(Deno.args);
