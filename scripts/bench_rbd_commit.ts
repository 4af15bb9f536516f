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
 *     deno run -A scripts/bench_rbd_commit.ts [--size-mib 256] [--changed 0.1] [--block-kib 64]
 *       [--rounds 7] [--windows 16,32] [--baseline DIR]
 *
 * `--windows`: one RBD side per write window, each its own replica (the first one's diff is
 * the one `rbd import-diff` applies). `--baseline DIR`: one more RBD side run from another
 * checkout (e.g. `git archive main | tar -x -C DIR`, with this tree's
 * `scripts/_bench_commit_child.ts` copied into it), at its default window.
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
    windows: { type: "string", default: "16" },
    baseline: { type: "string" },
  },
});
const SIZE = Number(values["size-mib"]) << 20;
const BLOCK = Number(values["block-kib"]) << 10;
const BLOCKS = Math.ceil(SIZE / BLOCK);
const CHANGED = Math.round(BLOCKS * Number(values.changed));
const ROUNDS = Number(values.rounds);
const WINDOWS = values.windows.split(",").map(Number);
const MiB = 1 << 20;
const SEED = 20261202;

const ceph = await sharedCephCluster();
const pool = uniqueName("bench-commit");
await cephCli(ceph, ["osd", "pool", "create", pool, "8", "8"]);
await cephCli(ceph, ["osd", "pool", "application", "enable", pool, "rbd"]);
const dir = await Deno.makeTempDir({ prefix: "presync-bench-commit-" });
const CHILD = "scripts/_bench_commit_child.ts";
const HERE = new URL("..", import.meta.url).pathname;
const SOURCE = `${dir}/source.raw`;
const CHANGED_LIST = `${dir}/changed.json`;

interface ChildResult {
  stageMs: number;
  commitMs: number;
  phases: Record<string, number>;
  hwmKiB: number;
}

/** One presync side: a back end, its replica's volume name, its window, its checkout. */
interface PresyncSide {
  label: string;
  kind: "rbd" | "dir";
  volume: string;
  window: string;
  tree: string;
}
const presyncSides: PresyncSide[] = [
  ...WINDOWS.map((w) => ({
    label: `RBD commit, window ${w}`,
    kind: "rbd" as const,
    volume: `bench-w${w}`,
    window: String(w),
    tree: HERE,
  })),
  ...(values.baseline
    ? [{
      label: "RBD commit, baseline tree",
      kind: "rbd" as const,
      volume: "bench-base",
      window: "-",
      tree: values.baseline,
    }]
    : []),
  { label: "directory commit", kind: "dir", volume: "bench", window: "-", tree: HERE },
];
const primary = presyncSides[0];

async function timed(what: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await what();
  return performance.now() - start;
}

/** Stages and commits `generation` of SOURCE into one side's replica, in a child process. */
async function child(side: PresyncSide, generation: number): Promise<ChildResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${side.tree}/${CHILD}`,
      side.kind,
      side.kind === "rbd" ? ceph.confPath : "-",
      side.kind === "rbd" ? pool : "-",
      side.kind === "rbd" ? `${dir}/rbd-state` : `${dir}/store`,
      SOURCE,
      CHANGED_LIST,
      String(BLOCK),
      String(generation),
      side.volume,
      side.window,
    ],
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${side.label} failed (generation ${generation})`);
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

  const seeds = new Map<PresyncSide, ChildResult>();
  for (const side of presyncSides) seeds.set(side, await child(side, 1));
  const importTarget = `${pool}/rbd-import`;
  const importMs = await timed(() =>
    rbdCli(ceph, ["--rbd_cache=false", "import", "--no-progress", SOURCE, importTarget])
  );
  await rbdCli(ceph, ["snap", "create", `${importTarget}@presync-g1`]);
  // rbd bench overwrites an image holding generation 1, as a commit overwrites the replica.
  const benchTarget = `${pool}/rbd-bench`;
  await rbdCli(ceph, ["--rbd_cache=false", "import", "--no-progress", SOURCE, benchTarget]);
  // And one that gets a snapshot before each round's bench, as a commit writes over the
  // snapshot of the generation before (the OSD clones each object on its first write).
  const snapBenchTarget = `${pool}/rbd-bench-snap`;
  await rbdCli(ceph, ["--rbd_cache=false", "import", "--no-progress", SOURCE, snapBenchTarget]);
  const seqTarget = `${pool}/${uniqueName("bench-seq")}`;
  await rbdCli(ceph, ["create", "--size", `${SIZE / MiB}M`, seqTarget]);
  const benchSeq = await rbdBench(seqTarget, seedBytes, "seq");

  console.log(
    `${SIZE / MiB} MiB volume, ${BLOCK / 1024} KiB blocks, seed ${SEED}: first sync ${
      f0(seedBytes / MiB)
    } MiB of data, then ${ROUNDS} rounds of ${CHANGED} random blocks (${f0(incBytes / MiB)} MiB)`,
  );
  console.log(
    `first sync (one run each): ${
      presyncSides.map((side) => {
        const seed = seeds.get(side)!;
        return `${side.label} ${f0(rate(seedBytes, seed.stageMs + seed.commitMs))} MiB/s`;
      }).join(", ")
    }, rbd import ${f0(rate(seedBytes, importMs))} MiB/s, rbd bench seq ${f0(benchSeq)} MiB/s`,
  );

  interface Round {
    order: string[];
    presync: Map<PresyncSide, ChildResult>;
    bench: number;
    snapBench: number;
    importDiffMs: number;
  }
  const rounds: Round[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const generation = round + 1;
    const changed = new Set<number>();
    while (changed.size < CHANGED) changed.add(prng.int(BLOCKS));
    for (const b of changed) prng.fill(image.subarray(b * BLOCK, (b + 1) * BLOCK));
    await Deno.writeFile(SOURCE, image);
    await Deno.writeTextFile(CHANGED_LIST, JSON.stringify([...changed].sort((a, b) => a - b)));

    const result: Round = {
      order: [],
      presync: new Map(),
      bench: 0,
      snapBench: 0,
      importDiffMs: 0,
    };
    const importDiff = async () => {
      const diff = `${dir}/g${generation}.diff`;
      await rbdCli(ceph, [
        "export-diff",
        "--no-progress",
        "--from-snap",
        `presync-g${generation - 1}`,
        `${pool}/presync-${primary.volume}@presync-g${generation}`,
        diff,
      ]);
      result.importDiffMs = await timed(() =>
        rbdCli(ceph, ["--rbd_cache=false", "import-diff", "--no-progress", diff, importTarget])
      );
      await Deno.remove(diff);
    };
    // Every side, in an order rotated by one each round; import-diff applies the diff of the
    // first RBD side's snapshots, so it follows that side.
    const sides: { label: string; run: () => Promise<void> }[] = [
      ...presyncSides.map((side) => ({
        label: side.label,
        run: async () => {
          result.presync.set(side, await child(side, generation));
          if (side === primary) await importDiff();
        },
      })),
      {
        label: "rbd bench",
        run: async () => void (result.bench = await rbdBench(benchTarget, incBytes, "rand")),
      },
      {
        label: "rbd bench after a snapshot",
        run: async () => {
          await rbdCli(ceph, ["snap", "create", `${snapBenchTarget}@round${round}`]);
          result.snapBench = await rbdBench(snapBenchTarget, incBytes, "rand");
        },
      },
    ];
    const shift = (round - 1) % sides.length;
    for (const side of [...sides.slice(shift), ...sides.slice(0, shift)]) {
      result.order.push(side.label);
      await side.run();
    }
    rounds.push(result);
    console.log(
      `round ${round} (${result.order.join(" → ")}): ${
        presyncSides.map((side) => {
          const ms = result.presync.get(side)!.commitMs;
          return `${side.label} ${f0(rate(incBytes, ms))} MiB/s (${f0(ms)} ms, ${
            f2(rate(incBytes, ms) / result.bench)
          }× rbd bench)`;
        }).join("; ")
      }; rbd bench rand ${f0(result.bench)} MiB/s; after a snapshot ${
        f0(result.snapBench)
      } MiB/s; rbd import-diff ${f0(rate(incBytes, result.importDiffMs))} MiB/s (${
        f0(result.importDiffMs)
      } ms)`,
    );
  }

  console.log(
    `\n| ${ROUNDS} rounds, medians | MiB/s | ms | per-round ratio to rbd bench | ` +
      "to rbd bench after a snapshot |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  const summary = (label: string, msOf: (r: Round) => number) => {
    const ms = rounds.map(msOf);
    const rates = ms.map((m) => rate(incBytes, m));
    console.log(
      `| ${label} | ${f0(median(rates))} | ${f0(median(ms))} | ${
        f2(median(rounds.map((r, i) => rates[i] / r.bench)))
      }× | ${f2(median(rounds.map((r, i) => rates[i] / r.snapBench)))}× |`,
    );
  };
  for (const side of presyncSides) summary(side.label, (r) => r.presync.get(side)!.commitMs);
  summary("rbd bench rand, 16 threads", (r) => incBytes / MiB / r.bench * 1000);
  summary("rbd bench rand after a snapshot", (r) => incBytes / MiB / r.snapBench * 1000);
  summary("rbd import-diff", (r) => r.importDiffMs);

  console.log(
    `\n| phase of the commit (ms, median) | ${presyncSides.map((s) => s.label).join(" | ")} |`,
  );
  console.log(`| --- |${presyncSides.map(() => " --- |").join("")}`);
  for (const phase of Object.keys(rounds[0].presync.get(primary)!.phases)) {
    console.log(
      `| ${phase} | ${
        presyncSides.map((side) => {
          // A side run by another checkout's child may not name every phase.
          const values = rounds.map((r) => r.presync.get(side)!.phases[phase]);
          return values.every((v) => v !== undefined) ? f0(median(values)) : "–";
        }).join(" | ")
      } |`,
    );
  }
  console.log(
    `\nstaging (local log), median: ${
      presyncSides.map((side) =>
        `${side.label} ${
          f0(median(rounds.map((r) => rate(incBytes, r.presync.get(side)!.stageMs))))
        } MiB/s`
      ).join(", ")
    }`,
  );
  console.log(
    `peak RSS of the destination process: ${
      presyncSides.map((side) =>
        `${side.label} ${
          f0(
            Math.max(
              seeds.get(side)!.hwmKiB,
              ...rounds.map((r) => r.presync.get(side)!.hwmKiB),
            ) / 1024,
          )
        } MiB`
      ).join(", ")
    }`,
  );
  console.log(`load average: ${loadStart} at the start, ${await load()} at the end`);
} finally {
  await cephCli(ceph, ["osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"]);
  await Deno.remove(dir, { recursive: true });
}
