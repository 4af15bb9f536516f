/**
 * Evacuation benchmark (issues 8, 17): evacuating a VM disk across an emulated WAN with presync
 * after background pre-synchronisation (scan and nbd trackers), against a full copy
 * (`zstd -1 |` TCP) and `rsync --inplace --no-whole-file` with an up-to-date basis, on the
 * same link and the same image state; each presync row sets the prediction `status` made just
 * before `evacuate` against the measured time. Prints markdown tables; renders figures with
 * `--out DIR`.
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
  /** Trackers to run every link point with (the first one also runs the sweep). */
  trackers: TrackerName[];
  agentArgs: string[];
  /**
   * Also run each tracker on the first link with the agent's `--rate` at this share of the
   * link (presync only): the prediction then needs the link probe. 0: no such point.
   */
  rateBoundShare: number;
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
  tracker: TrackerName;
  /** The agent's `--rate`, bits/s (null: unlimited). */
  rateBitsPerSecond: number | null;
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
    const templates = new Map<TrackerName, string>();
    let started = performance.now();
    for (const tracker of options.trackers) {
      const template = `${work}/template-${tracker}`;
      await Deno.mkdir(template);
      log(`making a ${options.sizeBytes / MiB} MiB image and its initial replica (${tracker})`);
      started = performance.now();
      // The same seed: every tracker starts from the same image.
      await makeTemplate(
        template,
        tracker,
        (path) => writeImage(path, new Prng(options.seed), options.sizeBytes, options),
      );
      log(`  initial sync done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      templates.set(tracker, template);
    }
    const points: Point[] = [];
    for (const tracker of options.trackers) {
      for (const link of options.links) {
        points.push({ link, tracker, factor: 1, contenders: true, rateBitsPerSecond: null });
      }
      if (options.rateBoundShare > 0) {
        const link = options.links[0];
        const rateBitsPerSecond = Math.round(link.rateBitsPerSecond * options.rateBoundShare);
        points.push({ link, tracker, factor: 1, contenders: false, rateBitsPerSecond });
      }
    }
    for (const factor of options.sweep) {
      if (factor === 1) continue;
      points.push({
        link: options.links[0],
        tracker: options.trackers[0],
        factor,
        contenders: options.sweepContenders,
        rateBitsPerSecond: null,
      });
    }
    for (const [i, point] of points.entries()) {
      const root = `${work}/run-${i}`;
      await Deno.mkdir(root);
      try {
        started = performance.now();
        log(
          `${linkName(point.link)}, ${point.tracker} tracker, write rate ×${point.factor}${
            point.rateBitsPerSecond ? `, --rate ${point.rateBitsPerSecond / 1e6} Mbit/s` : ""
          }: pre-sync`,
        );
        const result = await runPoint(options, templates.get(point.tracker)!, root, point, i, log);
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

/** One run: a link, a tracker, a write-rate factor, an agent rate limit. */
interface Point {
  link: LinkPoint;
  tracker: TrackerName;
  factor: number;
  contenders: boolean;
  rateBitsPerSecond: number | null;
}

async function runPoint(
  options: BenchOptions,
  template: string,
  root: string,
  point: Point,
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
  const agentArgs = point.rateBitsPerSecond === null ? options.agentArgs : [
    ...withoutFlag(options.agentArgs, "--rate"),
    "--rate",
    `${point.rateBitsPerSecond / 1e6}mbit`,
  ];
  const presync = await runPresync({
    template,
    root,
    link,
    tracker: point.tracker,
    agentArgs,
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
    tracker: point.tracker,
    rateBitsPerSecond: point.rateBitsPerSecond,
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

/** `args` without `flag` and its value. */
function withoutFlag(args: string[], flag: string): string[] {
  return args.filter((_, i) => args[i] !== flag && args[i - 1] !== flag);
}

/** The figures of a point without its samples, for logs. */
function summary(r: PointResult): Record<string, unknown> {
  return {
    link: r.link,
    tracker: r.tracker,
    rateBitsPerSecond: r.rateBitsPerSecond,
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

/** The signed error of the prediction made just before `evacuate`, as a share of the time. */
export function predictionError(r: PointResult): number | null {
  const predicted = r.presync.before.predictedEvacuationSeconds;
  if (predicted === null || predicted === undefined) return null;
  return (Number(predicted) - r.presync.wallSeconds) / r.presync.wallSeconds;
}

function percent(share: number | null): string {
  return share === null ? "none" : `${share >= 0 ? "+" : ""}${(share * 100).toFixed(1)}%`;
}

/** The markdown table of the main points (write-rate factor 1, no agent rate limit). */
export function markdownTable(results: PointResult[]): string {
  const rows = [
    "| link | tracker | contender | seconds | wire MB | × physical limit | vs full copy | predicted s | prediction error | replica |",
    "| ---- | ------- | --------- | ------: | ------: | ---------------: | -----------: | ----------: | ---------------: | ------- |",
  ];
  const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
  for (const r of results.filter((r) => r.rateFactor === 1 && r.rateBitsPerSecond === null)) {
    const name = linkName(r.link);
    const vsFull = (s: number) =>
      r.full ? `${((1 - s / r.full.seconds) * 100).toFixed(1)}% shorter` : "";
    const ok = (equal: boolean | undefined, verified = true) =>
      equal && verified ? "equal" : "**DIFFERS**";
    const row = (contender: string, seconds: number, bytes: number, rest: string) =>
      `| ${name} | ${r.tracker} | ${contender} | ${seconds.toFixed(2)} | ${mb(bytes)} | ${
        (seconds / r.limitSeconds).toFixed(2)
      }× | ${vsFull(seconds)} | ${rest} |`;
    rows.push(row("physical limit", r.limitSeconds, r.diff.compressedBytes, " |  |  "));
    rows.push(row("limit, 64 KiB blocks", limit64(r), r.diff.blockCompressedBytes, " |  |  "));
    const p = r.presync;
    rows.push(
      row(
        "presync evacuate",
        p.wallSeconds,
        p.wireBytes,
        `${p.before.predictedEvacuationSeconds} | ${percent(predictionError(r))} | ${
          ok(r.equal.presync, p.report.verified)
        }`,
      ),
    );
    for (
      const [label, c, eq] of [
        ["rsync --inplace", r.rsync, r.equal.rsync],
        ["full copy zstd -1", r.full, r.equal.full],
      ] as const
    ) {
      if (c) rows.push(row(label, c.seconds, c.wireBytes, ` |  | ${ok(eq)}`));
    }
  }
  return rows.join("\n");
}

/**
 * The prediction made just before each `evacuate` against the measured time, with its inputs
 * (where the link speed and the writes since the last cut came from) and where the time went.
 */
export function predictionTable(results: PointResult[]): string {
  const rows = [
    "| link | tracker | --rate | write ×| predicted s | measured s | error | error, overlap counted twice | link from | new writes from | blocks predicted / sent (overlap) | scan predicted / measured s | pause / scan / send / commit / verify s | send waited for source / link / digests / acks s | generations |",
    "| ---- | ------- | -----: | -----: | ----------: | ---------: | ----: | ---------------------------: | --------- | --------------- | --------------------------------: | --------------------------: | --------------------------------------- | ------------------------------------------------ | ----------: |",
  ];
  for (const r of results) {
    const prediction = (r.presync.before.prediction ?? {}) as Record<string, unknown>;
    const b = r.presync.report.breakdown;
    const parts = b
      ? [b.pauseSeconds, b.scanSeconds, b.sendSeconds, b.commitSeconds, b.verifySeconds]
        .map((x) => x.toFixed(2)).join(" / ")
      : "";
    const w = b?.sendWaits; // absent from the reports of trees before it
    const waits = w
      ? [w.sourceSeconds, w.linkSeconds, w.digestsSeconds, w.flushSeconds]
        .map((x) => x.toFixed(2)).join(" / ")
      : "";
    const num = (key: string) => typeof prediction[key] === "number" ? prediction[key] : null;
    const [blocks, bytes, link, overlap, scan] = ["blocks", "bytes", "linkBytesPerSecond"]
      .concat("overlapBlocks", "scanSeconds").map(num);
    // The model before the union: a block both in flight and written since counted twice.
    const seconds = num("seconds");
    const twice = seconds !== null && blocks && bytes !== null && link && overlap !== null
      ? (seconds + overlap * (bytes / blocks) / link - r.presync.wallSeconds) /
        r.presync.wallSeconds
      : null;
    rows.push(
      `| ${linkName(r.link)} | ${r.tracker} | ${
        r.rateBitsPerSecond === null ? "none" : `${r.rateBitsPerSecond / 1e6} Mbit/s`
      } | ${r.rateFactor} | ${r.presync.before.predictedEvacuationSeconds} | ${
        r.presync.wallSeconds.toFixed(2)
      } | ${percent(predictionError(r))} | ${percent(twice)} | ${
        prediction.linkSource ?? "none"
      } | ${prediction.freshSource ?? ""} | ${blocks ?? ""} / ${b?.blocks ?? ""} (${
        overlap ?? ""
      }) | ${scan === null ? "" : scan.toFixed(2)} / ${
        b ? b.scanSeconds.toFixed(2) : ""
      } | ${parts} | ${waits} | ${b?.generations ?? ""} |`,
    );
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
  const tracker = results[0]?.tracker;
  const rows = [
    "| write MiB/s | presync s | predicted s | limit s (4 KiB) | limit s (64 KiB) | diff MB (4 KiB, zstd) | RPO before s |",
    "| ----------: | --------: | ----------: | --------------: | ---------------: | --------------------: | -----------: |",
  ];
  const sweep = results.filter((r) =>
    r.link === first && r.tracker === tracker && r.rateBitsPerSecond === null
  ).sort((a, b) => a.rateFactor - b.rateFactor);
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

  --quick               smoke run: 256 MiB, one link point (100 Mbit/s, 150 ms), scan tracker,
                        15 s pre-sync, one cut, no sweep, no rate-bound point (flags given
                        after it still apply)
  --links LIST          RATE_MBIT:RTT_MS,... (default 100:150,20:250)
  --size N              image size, e.g. 8G, 1G, 256M (default 8G)
  --sparse-32g          a 32 GiB image, 97% of it never written (sets --size and --zero-share)
  --zero-share P        share of 64 KiB regions left zero (default 0.5)
  --text-share P        share of the others that are text-like (default 0.5; rest random)
  --hot-rate MIB        MiB/s written into the hot set (default 1)
  --hot-set N           hot set size (default 64M)
  --cold-rate MIB       MiB/s written anywhere in the image (default 0.1)
  --presync SECONDS     pre-sync phase before "evacuate now" (default 120)
  --cuts N              link cuts during the pre-sync phase (default 2)
  --cut-seconds S       length of each cut (default 5)
  --cut-mode MODE       reset|blackhole (default reset)
  --trackers LIST       how the agent finds writes: scan,nbd (nbd: the "VM" writes through
                        presync's NBD server; default both, each link with each)
  --interval SECONDS    agent --interval (default 10)
  --rate R              agent --rate, background limit (default 0: unlimited)
  --rate-bound SHARE    one more point per tracker on the first link with the agent's --rate
                        at SHARE of the link, presync only (default 0.25; 0: none)
  --delay-target MS     agent --delay-target (default: the agent's)
  --sweep LIST          write-rate multipliers at the first link point (default 0.25,1,4; "" none)
  --sweep-contenders    also run rsync and the full copy at each sweep point
  --contenders LIST     baselines to run: full,rsync (default both)
  --seed N              seed of the image and the workload (default 1)
  --work-dir DIR        where the temporary images go (default the system's temp dir)
  --out DIR             write the figures there (SVG, PNG), e.g. docs
  --figures-from LIST   no run: the figures (and tables) of earlier --json outputs, FILE,...
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
): {
  options: BenchOptions;
  out?: string;
  figuresFrom: string[];
  json: boolean;
  help: boolean;
} {
  const quick = args.includes("--quick");
  const huge = args.includes("--sparse-32g");
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      links: { type: "string", default: quick ? "100:150" : "100:150,20:250" },
      size: { type: "string", default: quick ? "256M" : huge ? "32G" : "8G" },
      "sparse-32g": { type: "boolean", default: false },
      "zero-share": { type: "string", default: huge ? "0.97" : "0.5" },
      "text-share": { type: "string", default: "0.5" },
      "hot-rate": { type: "string", default: "1" },
      "hot-set": { type: "string", default: "64M" },
      "cold-rate": { type: "string", default: "0.1" },
      presync: { type: "string", default: quick ? "15" : "120" },
      cuts: { type: "string", default: quick ? "1" : "2" },
      "cut-seconds": { type: "string", default: quick ? "2" : "5" },
      "cut-mode": { type: "string", default: "reset" },
      trackers: { type: "string", default: quick ? "scan" : "scan,nbd" },
      "rate-bound": { type: "string", default: quick ? "0" : "0.25" },
      interval: { type: "string", default: quick ? "3" : "10" },
      rate: { type: "string", default: "0" },
      "delay-target": { type: "string" },
      sweep: { type: "string", default: quick ? "" : "0.25,1,4" },
      "sweep-contenders": { type: "boolean", default: false },
      contenders: { type: "string", default: "full,rsync" },
      seed: { type: "string", default: "1" },
      "work-dir": { type: "string" },
      out: { type: "string" },
      "figures-from": { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const mode = values["cut-mode"];
  if (mode !== "reset" && mode !== "blackhole") {
    throw new Error(`--cut-mode: expected reset or blackhole: received "${mode}"`);
  }
  const trackers = values.trackers.split(",").filter((t) => t !== "");
  for (const t of trackers) {
    if (t !== "scan" && t !== "nbd") {
      throw new Error(`--trackers: expected scan and/or nbd: received "${t}"`);
    }
  }
  if (trackers.length === 0) throw new Error(`--trackers: expected scan and/or nbd`);
  const rateBoundShare = Number(values["rate-bound"]);
  if (!(rateBoundShare >= 0 && rateBoundShare < 1)) {
    throw new Error(
      `--rate-bound: expected a share from 0 to 1: received "${values["rate-bound"]}"`,
    );
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
      trackers: trackers as TrackerName[],
      agentArgs,
      rateBoundShare,
      sweep: values.sweep.split(",").filter((s) => s !== "").map(Number),
      sweepContenders: values["sweep-contenders"],
      contenders: contenders as ("full" | "rsync")[],
      seed: Number(values.seed),
      workDir: values["work-dir"],
    },
    out: values.out,
    figuresFrom: (values["figures-from"] ?? "").split(",").filter((f) => f !== ""),
    json: values.json,
    help: values.help,
  };
}

async function main(args: string[]): Promise<void> {
  const { options, out, figuresFrom, json, help } = parseBenchArgs(args);
  if (help) {
    console.log(HELP);
    return;
  }
  if (figuresFrom.length > 0 && !out) throw new Error("--figures-from needs --out DIR");
  const results = figuresFrom.length > 0
    ? (await Promise.all(figuresFrom.map(async (f) => JSON.parse(await Deno.readTextFile(f)))))
      .flat() as PointResult[]
    : await runBenchmark(options);
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
  console.log(`\n${predictionTable(results)}`);
  if (results.some((r) => r.rateFactor !== 1)) console.log(`\n${sweepTable(results)}`);
}

if (import.meta.main) await main(Deno.args);
