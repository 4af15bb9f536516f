/**
 * The first local sync of a new volume (`presync sync --local`), side by side: the tree
 * as it is against a named baseline revision (by default the one before seeding in place,
 * when the first generation was staged, claimed with zeros and applied: three writes per
 * block), and a plain `dd … conv=fdatasync` copy of the same image onto the same disk (the
 * raw write speed the goal is measured against). Prints one markdown table (kept in
 * docs/BENCHMARKS.md) with wall time, throughput, bytes written to the disk and peak RSS.
 *
 *     deno run -A scripts/bench_seed.ts [--size-gib 4] [--baseline bf648b7] [--dir DIR]
 *                                       [--runs 1] [--link MBIT:RTT_MS [--also REF…]]
 *
 * With `--link` (e.g. `--link 1000:20`), the first sync goes over the network instead: `presync
 * agent` into `presync serve` (directory store) through the WAN emulator, both directions
 * shaped as given, of an image half random and half text-like, against a plain copy of the
 * same image over one TCP stream through the same emulated link (raw bytes, and `zstd -1 |`);
 * every replica is compared byte for byte. The table adds the ratio to the raw copy, the CPU
 * time of both agents (all threads, and the main thread alone) and their peak RSS
 * (scripts/_seed_link.ts). `--also REF` (repeatable) adds more baseline revisions.
 *
 * Needs `git` (to export the baseline) and GNU `time`. Runs are interleaved (baseline,
 * current, dd, baseline, …) so a change in the machine's load hits all of them alike.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Prng } from "../fixtures/prng.ts";
import { median } from "./_bench_timing.ts";
import { writeImage } from "./_evac_data.ts";
import { copyOverLink, type LinkRun, seedOverLink } from "./_seed_link.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    "size-gib": { type: "string", default: "4" },
    baseline: { type: "string", default: "bf648b7" },
    dir: { type: "string" },
    runs: { type: "string", default: "1" },
    link: { type: "string" },
    also: { type: "string", multiple: true, default: [] },
  },
});

const GiB = 2 ** 30;
const sizeBytes = Number(flags["size-gib"]) * GiB;
const runs = Number(flags.runs);
const repo = new URL("..", import.meta.url).pathname;
const dir = flags.dir ?? await Deno.makeTempDir({ prefix: "presync-bench-seed-" });
const link = flags.link === undefined ? undefined : parseLink(flags.link);
const image = `${dir}/image${link ? "-mixed" : ""}.raw`;

function parseLink(text: string): { rateBitsPerSecond: number; rttMs: number } {
  const [mbit, rtt] = text.split(":").map(Number);
  if (!(mbit > 0) || !(rtt >= 0)) {
    throw new Error(`--link wants MBIT:RTT_MS such as 1000:20: received ${text}`);
  }
  return { rateBitsPerSecond: mbit * 1e6, rttMs: rtt };
}

/** What one run measured (GNU time's wall clock, file system outputs and peak RSS). */
interface Run {
  seconds: number;
  writtenBytes: number;
  peakRssBytes: number;
}

async function run(argv: string[]): Promise<Run> {
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%e %O %M", ...argv],
    stdout: "null",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) throw new Error(`${argv.join(" ")} failed:\n${text}`);
  const [seconds, outputs, rssKiB] = text.split("\n").at(-1)!.split(" ").map(Number);
  return { seconds, writtenBytes: outputs * 512, peakRssBytes: rssKiB * 1024 };
}

async function makeImage(): Promise<void> {
  try {
    if ((await Deno.stat(image)).size === sizeBytes) return;
  } catch {
    // Made below.
  }
  if (link) {
    // Half random, half text-like, no zero blocks: every block is sent and written.
    return await writeImage(image, new Prng(1818), sizeBytes, { zeroShare: 0, textShare: 0.5 });
  }
  // Incompressible and without zero blocks: every block is sent and written.
  const prng = new Prng(1818);
  const chunk = prng.fill(new Uint8Array(64 * 1024 * 1024));
  const file = await Deno.open(image, { write: true, create: true, truncate: true });
  for (let at = 0; at < sizeBytes; at += chunk.length) {
    chunk[0] = at / chunk.length;
    await file.write(chunk.subarray(0, Math.min(chunk.length, sizeBytes - at)));
  }
  file.close();
}

async function exportBaseline(rev: string): Promise<string> {
  const tree = `${dir}/baseline-${rev}`;
  await Deno.mkdir(tree, { recursive: true });
  const archive = await new Deno.Command("sh", {
    args: ["-c", `git -C '${repo}' archive '${rev}' | tar -x -C '${tree}'`],
  }).output();
  if (!archive.success) throw new Error(new TextDecoder().decode(archive.stderr));
  return tree;
}

/** A first local sync with the tree at `root`, into a fresh store on the bench disk. */
async function firstSync(root: string): Promise<Run> {
  await Deno.remove(`${dir}/store`, { recursive: true }).catch(() => {});
  await Deno.remove(`${dir}/state`, { recursive: true }).catch(() => {});
  const result = await run([
    Deno.execPath(),
    "run",
    "-A",
    `${root}/agent/main.ts`,
    "sync",
    "--local",
    image,
    `${dir}/store`,
    "--volume",
    "seed",
    "--state",
    `${dir}/state`,
  ]);
  await Deno.remove(`${dir}/store`, { recursive: true });
  await Deno.remove(`${dir}/state`, { recursive: true });
  return result;
}

async function ddCopy(): Promise<Run> {
  const result = await run(["dd", `if=${image}`, `of=${dir}/dd.img`, "bs=1M", "conv=fdatasync"]);
  await Deno.remove(`${dir}/dd.img`);
  return result;
}

async function benchLink(baselines: string[], at: NonNullable<typeof link>): Promise<void> {
  const load = async () => (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3);
  const loadBefore = await load();
  const revisions = [flags.baseline!, ...flags.also!];
  const contenders: [string, () => Promise<LinkRun>][] = [
    ...revisions.map((rev, i): [string, () => Promise<LinkRun>] => [
      `baseline ${rev}`,
      () => seedOverLink(baselines[i], image, `${dir}/run`, at),
    ]),
    ["this tree", () => seedOverLink(repo, image, `${dir}/run`, at)],
    ["raw copy, one TCP stream", () => copyOverLink(image, `${dir}/run`, at, false)],
    ["zstd -1 copy, one TCP stream", () => copyOverLink(image, `${dir}/run`, at, true)],
  ];
  const results = new Map<string, LinkRun[]>(contenders.map(([name]) => [name, []]));
  for (let i = 0; i < runs; i++) {
    for (const [name, fn] of contenders) results.get(name)!.push(await fn());
  }
  const rawSeconds = median(results.get("raw copy, one TCP stream")!.map((r) => r.seconds));
  const mib = (bytes: number) => bytes === 0 ? "" : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  const cpu = (all: number, main: number) =>
    all === 0 ? "" : `${all.toFixed(1)} (${main.toFixed(1)})`;
  console.log(
    `first sync of ${flags["size-gib"]} GiB (half random, half text) over ` +
      `${at.rateBitsPerSecond / 1e6} Mbit/s, ${at.rttMs} ms RTT, ${runs} run(s), median; ` +
      `load average ${loadBefore.join(" ")} → ${(await load()).join(" ")}:\n`,
  );
  console.log(
    "| what | seconds | goodput MB/s | vs raw copy | wire MB | agent CPU s (main) | " +
      "serve CPU s (main) | agent RSS | serve RSS |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [name, list] of results) {
    const seconds = median(list.map((r) => r.seconds));
    const m = (pick: (r: LinkRun) => number) => median(list.map(pick));
    console.log(
      `| ${name} | ${seconds.toFixed(1)} | ${(sizeBytes / seconds / 1e6).toFixed(0)} | ` +
        `${(rawSeconds / seconds).toFixed(2)}× | ${(m((r) => r.wireBytes) / 1e6).toFixed(0)} | ` +
        `${cpu(m((r) => r.agentCpuSeconds), m((r) => r.agentMainCpuSeconds))} | ` +
        `${cpu(m((r) => r.serveCpuSeconds), m((r) => r.serveMainCpuSeconds))} | ` +
        `${mib(m((r) => r.agentRssBytes))} | ${mib(m((r) => r.serveRssBytes))} |`,
    );
  }
  console.log(
    `\nruns in order (seconds): ${
      [...results].map(([name, list]) => `${name}: ${list.map((r) => r.seconds.toFixed(1))}`)
        .join("; ")
    }`,
  );
}

async function benchLocal(baseline: string): Promise<void> {
  const contenders: [string, () => Promise<Run>][] = [
    [`baseline ${flags.baseline} (staged: log, zeros, apply)`, () => firstSync(baseline)],
    ["this tree (seeded in place)", () => firstSync(repo)],
    ["dd bs=1M conv=fdatasync (raw write)", ddCopy],
  ];
  const results = new Map<string, Run[]>(contenders.map(([name]) => [name, []]));
  for (let i = 0; i < runs; i++) {
    for (const [name, fn] of contenders) results.get(name)!.push(await fn());
  }
  const mb = (bytes: number) => (bytes / 1e6).toFixed(0);
  console.log(`first local sync of ${flags["size-gib"]} GiB, ${runs} run(s), median:\n`);
  console.log("| what | seconds | MB/s | written to disk | peak RSS |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  for (const [name, list] of results) {
    const seconds = median(list.map((r) => r.seconds));
    console.log(
      `| ${name} | ${seconds.toFixed(1)} | ${mb(sizeBytes / seconds)} | ` +
        `${(median(list.map((r) => r.writtenBytes)) / GiB).toFixed(1)} GiB | ` +
        `${(median(list.map((r) => r.peakRssBytes)) / 2 ** 20).toFixed(0)} MiB |`,
    );
  }
}

try {
  await makeImage();
  const baseline = await exportBaseline(flags.baseline!);
  if (link) {
    await benchLink([baseline, ...await Promise.all(flags.also!.map(exportBaseline))], link);
  } else await benchLocal(baseline);
} finally {
  if (!flags.dir) await Deno.remove(dir, { recursive: true });
}
