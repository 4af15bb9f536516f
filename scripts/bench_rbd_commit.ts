/**
 * Commit benchmark of the RBD back end (issue 18): a first sync (seeding every block), then
 * `--rounds` incremental generations, each committed into the RBD back end and into the
 * directory back end, next to `rbd bench --io-type write --io-pattern rand --io-threads 16` of
 * the same bytes at the same block size and `rbd import-diff` of the same diff, in one run on
 * the single-node test cluster (`scripts/ceph_dev.sh`). The order of the sides alternates from
 * round to round; the figures are per round, their medians and the median of the per-round
 * ratios, with the RBD commit split into its phases (`_bench_commit_child.ts`). Each presync
 * side runs in a child process whose peak RSS (VmHWM) is reported.
 *
 *     deno run -A scripts/bench_rbd_commit.ts [--size-mib 256] [--changed 0.1] [--block-kib 64] [--rounds 7]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { cephCli, rbdCli, sharedCephCluster, uniqueName } from "../fixtures/ceph.ts";
import { Prng } from "../fixtures/prng.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "256" },
    changed: { type: "string", default: "0.1" },
    "block-kib": { type: "string", default: "64" },
    rounds: { type: "string", default: "7" },
  },
});
const SIZE = Number(values["size-mib"]) << 20;
const BLOCK = Number(values["block-kib"]) << 10;
const BLOCKS = Math.ceil(SIZE / BLOCK);
const CHANGED = Math.round(BLOCKS * Number(values.changed));
const ROUNDS = Number(values.rounds);
const MiB = 1 << 20;
const SEED = 20261202;

const ceph = await sharedCephCluster();
const pool = uniqueName("bench-commit");
await cephCli(ceph, ["osd", "pool", "create", pool, "8", "8"]);
await cephCli(ceph, ["osd", "pool", "application", "enable", pool, "rbd"]);
const dir = await Deno.makeTempDir({ prefix: "presync-bench-commit-" });
const CHILD = new URL("./_bench_commit_child.ts", import.meta.url).pathname;
const SOURCE = `${dir}/source.raw`;
const CHANGED_LIST = `${dir}/changed.json`;

interface ChildResult {
  stageMs: number;
  commitMs: number;
  phases: Record<string, number>;
  hwmKiB: number;
}

async function timed(what: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await what();
  return performance.now() - start;
}

/** Stages and commits `generation` of SOURCE into one back end, in a child process. */
async function child(kind: "rbd" | "dir", generation: number): Promise<ChildResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      CHILD,
      kind,
      kind === "rbd" ? ceph.confPath : "-",
      kind === "rbd" ? pool : "-",
      kind === "rbd" ? `${dir}/rbd-state` : `${dir}/store`,
      SOURCE,
      CHANGED_LIST,
      String(BLOCK),
      String(generation),
    ],
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${kind} child failed (generation ${generation})`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** `rbd bench` writing `bytes` to `image` (cache off, 16 threads); its own MiB/s. */
async function rbdBench(image: string, bytes: number, pattern: "seq" | "rand"): Promise<number> {
  const out = await rbdCli(ceph, [
    "--rbd_cache=false",
    "bench",
    "--io-type",
    "write",
    "--io-size",
    String(BLOCK),
    "--io-threads",
    "16",
    "--io-total",
    String(bytes),
    "--io-pattern",
    pattern,
    image,
  ]);
  const ops = Number(/ops\/sec:\s*([\d.]+)/.exec(out)?.[1]);
  if (!(ops > 0)) throw new Error(`rbd bench printed no ops/sec:\n${out}`);
  return (ops * BLOCK) / MiB;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const rate = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);
const f0 = (x: number) => x.toFixed(0);
const f2 = (x: number) => x.toFixed(2);
const load = async () =>
  (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");

try {
  const loadStart = await load();
  // Generation 1: random data in 3 of 4 blocks.
  const prng = new Prng(SEED);
  const image = new Uint8Array(SIZE);
  for (let b = 0; b < BLOCKS; b++) {
    if (b % 4 !== 3) prng.fill(image.subarray(b * BLOCK, (b + 1) * BLOCK));
  }
  await Deno.writeFile(SOURCE, image);
  await Deno.writeTextFile(CHANGED_LIST, "[]");
  const seedBytes = (BLOCKS - Math.floor(BLOCKS / 4)) * BLOCK;
  const incBytes = CHANGED * BLOCK;

  const seedRbd = await child("rbd", 1);
  const seedDir = await child("dir", 1);
  const importTarget = `${pool}/rbd-import`;
  const importMs = await timed(() =>
    rbdCli(ceph, ["--rbd_cache=false", "import", "--no-progress", SOURCE, importTarget])
  );
  await rbdCli(ceph, ["snap", "create", `${importTarget}@presync-g1`]);
  // rbd bench overwrites an image holding generation 1, as a commit overwrites the replica.
  const benchTarget = `${pool}/rbd-bench`;
  await rbdCli(ceph, ["--rbd_cache=false", "import", "--no-progress", SOURCE, benchTarget]);
  const seqTarget = `${pool}/${uniqueName("bench-seq")}`;
  await rbdCli(ceph, ["create", "--size", `${SIZE / MiB}M`, seqTarget]);
  const benchSeq = await rbdBench(seqTarget, seedBytes, "seq");

  console.log(
    `${SIZE / MiB} MiB volume, ${BLOCK / 1024} KiB blocks, seed ${SEED}: first sync ${
      f0(seedBytes / MiB)
    } MiB of data, then ${ROUNDS} rounds of ${CHANGED} random blocks (${f0(incBytes / MiB)} MiB)`,
  );
  console.log(
    `first sync (one run): RBD ${f0(rate(seedBytes, seedRbd.stageMs + seedRbd.commitMs))} MiB/s, ` +
      `directory ${f0(rate(seedBytes, seedDir.stageMs + seedDir.commitMs))} MiB/s, rbd import ${
        f0(rate(seedBytes, importMs))
      } MiB/s, rbd bench seq ${f0(benchSeq)} MiB/s`,
  );
  console.log(
    "| round | order | RBD commit | rbd bench rand | ratio | rbd import-diff | ratio | dir commit |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");

  const rows: {
    rbd: ChildResult;
    dir: ChildResult;
    bench: number;
    importDiffMs: number;
  }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const generation = round + 1;
    const changed = new Set<number>();
    while (changed.size < CHANGED) changed.add(prng.int(BLOCKS));
    for (const b of changed) prng.fill(image.subarray(b * BLOCK, (b + 1) * BLOCK));
    await Deno.writeFile(SOURCE, image);
    await Deno.writeTextFile(CHANGED_LIST, JSON.stringify([...changed].sort((a, b) => a - b)));

    let rbd: ChildResult | undefined;
    let dirSide: ChildResult | undefined;
    let bench = 0;
    let importDiffMs = 0;
    const sides = {
      rbd: async () => void (rbd = await child("rbd", generation)),
      bench: async () => void (bench = await rbdBench(benchTarget, incBytes, "rand")),
      importDiff: async () => {
        const diff = `${dir}/g${generation}.diff`;
        await rbdCli(ceph, [
          "export-diff",
          "--no-progress",
          "--from-snap",
          `presync-g${generation - 1}`,
          `${pool}/presync-bench@presync-g${generation}`,
          diff,
        ]);
        importDiffMs = await timed(() =>
          rbdCli(ceph, ["--rbd_cache=false", "import-diff", "--no-progress", diff, importTarget])
        );
        await Deno.remove(diff);
      },
      dir: async () => void (dirSide = await child("dir", generation)),
    };
    // The diff is presync's own (its snapshots), so import-diff follows the RBD commit.
    const order: (keyof typeof sides)[] = round % 2
      ? ["rbd", "bench", "importDiff", "dir"]
      : ["bench", "rbd", "dir", "importDiff"];
    for (const side of order) await sides[side]();
    const row = { rbd: rbd!, dir: dirSide!, bench, importDiffMs };
    rows.push(row);
    const commitRate = rate(incBytes, row.rbd.commitMs);
    console.log(
      `| ${round} | ${order.join(", ")} | ${f0(commitRate)} MiB/s (${f0(row.rbd.commitMs)} ms) | ${
        f0(bench)
      } MiB/s | ${f2(commitRate / bench)}× | ${f0(rate(incBytes, importDiffMs))} MiB/s (${
        f0(importDiffMs)
      } ms) | ${f2(importDiffMs / row.rbd.commitMs)}× | ${
        f0(rate(incBytes, row.dir.commitMs))
      } MiB/s (${f0(row.dir.commitMs)} ms) |`,
    );
  }

  const commitRates = rows.map((r) => rate(incBytes, r.rbd.commitMs));
  console.log(
    `\nmedians of ${ROUNDS} rounds: RBD commit ${f0(median(commitRates))} MiB/s (${
      f0(median(rows.map((r) => r.rbd.commitMs)))
    } ms), rbd bench rand ${f0(median(rows.map((r) => r.bench)))} MiB/s, ` +
      `rbd import-diff ${f0(median(rows.map((r) => rate(incBytes, r.importDiffMs))))} MiB/s, ` +
      `dir commit ${f0(median(rows.map((r) => rate(incBytes, r.dir.commitMs))))} MiB/s`,
  );
  console.log(
    `median of the per-round ratios: RBD commit / rbd bench ${
      f2(median(rows.map((r, i) => commitRates[i] / r.bench)))
    }×, RBD commit / import-diff ${f2(median(rows.map((r) => r.importDiffMs / r.rbd.commitMs)))}×`,
  );
  console.log("\n| phase of the commit (ms, median) | RBD back end | directory back end |");
  console.log("| --- | --- | --- |");
  for (const phase of Object.keys(rows[0].rbd.phases)) {
    console.log(
      `| ${phase} | ${f0(median(rows.map((r) => r.rbd.phases[phase])))} | ${
        f0(median(rows.map((r) => r.dir.phases[phase])))
      } |`,
    );
  }
  console.log(
    `\nstaging (local log), median: RBD ${
      f0(median(rows.map((r) => rate(incBytes, r.rbd.stageMs))))
    } MiB/s, directory ${f0(median(rows.map((r) => rate(incBytes, r.dir.stageMs))))} MiB/s`,
  );
  console.log(
    `peak RSS of the destination process: RBD ${
      f0(Math.max(...rows.map((r) => r.rbd.hwmKiB), seedRbd.hwmKiB) / 1024)
    } MiB, directory ${f0(Math.max(...rows.map((r) => r.dir.hwmKiB), seedDir.hwmKiB) / 1024)} MiB`,
  );
  console.log(`load average: ${loadStart} at the start, ${await load()} at the end`);
} finally {
  await cephCli(ceph, ["osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"]);
  await Deno.remove(dir, { recursive: true });
}
