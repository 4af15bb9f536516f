/**
 * Commit benchmark of the RBD back end (issue 18 item 5): a first sync (seeding every block)
 * and one incremental generation, into the RBD back end and into the directory back end, next
 * to `rbd import` / `rbd import-diff` of the same data and `rbd bench --io-threads 16` of the
 * same number of bytes, in one run on the single-node test cluster (`scripts/ceph_dev.sh`).
 * Each presync side runs in a child process whose peak RSS (VmHWM) is reported.
 *
 *     deno run -A scripts/bench_rbd_commit.ts [--size-mib 256] [--changed 0.1] [--block-kib 64]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { rbdCli, sharedCephCluster, uniqueName } from "../fixtures/ceph.ts";
import { Prng } from "../fixtures/prng.ts";
import { cephCli } from "../fixtures/ceph.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "256" },
    changed: { type: "string", default: "0.1" },
    "block-kib": { type: "string", default: "64" },
  },
});
const SIZE = Number(values["size-mib"]) << 20;
const BLOCK = Number(values["block-kib"]) << 10;
const BLOCKS = Math.ceil(SIZE / BLOCK);
const CHANGED = Math.round(BLOCKS * Number(values.changed));
const MiB = 1 << 20;

const ceph = await sharedCephCluster();
const pool = uniqueName("bench-commit");
await cephCli(ceph, ["osd", "pool", "create", pool, "8", "8"]);
await cephCli(ceph, ["osd", "pool", "application", "enable", pool, "rbd"]);
const dir = await Deno.makeTempDir({ prefix: "presync-bench-commit-" });
const CHILD = new URL("./_bench_commit_child.ts", import.meta.url).pathname;

async function timed(what: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await what();
  return performance.now() - start;
}

async function child(kind: "rbd" | "dir", target: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      CHILD,
      kind,
      kind === "rbd" ? ceph.confPath : "-",
      kind === "rbd" ? pool : "-",
      target,
      `${dir}/g1.raw`,
      `${dir}/g2.raw`,
      `${dir}/changed.json`,
      String(BLOCK),
    ],
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${kind} child failed`);
  return JSON.parse(new TextDecoder().decode(out.stdout)) as {
    seedMs: number;
    stageMs: number;
    commitMs: number;
    hwmKiB: number;
  };
}

try {
  // The source: random data in 3 of 4 blocks, then CHANGED random blocks rewritten.
  const prng = new Prng(20261202);
  const image = new Uint8Array(SIZE);
  for (let b = 0; b < BLOCKS; b++) {
    if (b % 4 !== 3) prng.fill(image.subarray(b * BLOCK, (b + 1) * BLOCK));
  }
  await Deno.writeFile(`${dir}/g1.raw`, image);
  const changed = new Set<number>();
  while (changed.size < CHANGED) changed.add(prng.int(BLOCKS));
  for (const b of changed) prng.fill(image.subarray(b * BLOCK, (b + 1) * BLOCK));
  await Deno.writeFile(`${dir}/g2.raw`, image);
  await Deno.writeTextFile(
    `${dir}/changed.json`,
    JSON.stringify([...changed].sort((a, b) => a - b)),
  );
  const seedBytes = (BLOCKS - Math.floor(BLOCKS / 4)) * BLOCK;
  const incBytes = CHANGED * BLOCK;

  const rbd = await child("rbd", `${dir}/rbd-state`);
  const directory = await child("dir", `${dir}/store`);

  // The same data through the rbd CLI: import of generation 1, import-diff of generation 2
  // (the diff between presync's own snapshots presync-g1 and presync-g2).
  const target = `${pool}/rbd-import`;
  const importMs = await timed(() =>
    rbdCli(ceph, ["--rbd_cache=false", "import", "--no-progress", `${dir}/g1.raw`, target])
  );
  await rbdCli(ceph, ["snap", "create", `${target}@presync-g1`]);
  await rbdCli(ceph, [
    "export-diff",
    "--no-progress",
    "--from-snap",
    "presync-g1",
    `${pool}/presync-bench@presync-g2`,
    `${dir}/g2.diff`,
  ]);
  const importDiffMs = await timed(() =>
    rbdCli(ceph, ["--rbd_cache=false", "import-diff", "--no-progress", `${dir}/g2.diff`, target])
  );
  const bench = async (bytes: number, pattern: string) => {
    const name = `${pool}/${uniqueName("bench")}`;
    await rbdCli(ceph, ["create", "--size", `${SIZE / MiB}M`, name]);
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
      name,
    ]);
    const ops = Number(/ops\/sec:\s*([\d.]+)/.exec(out)?.[1]);
    return (ops * BLOCK) / MiB;
  };
  const benchSeq = await bench(seedBytes, "seq");
  const benchRand = await bench(incBytes, "rand");

  const rate = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);
  const f = (x: number) => x.toFixed(0);
  console.log(
    `${SIZE / MiB} MiB volume, ${BLOCK / 1024} KiB blocks: first sync ${
      f(seedBytes / MiB)
    } MiB of data, incremental ${CHANGED} blocks (${f(incBytes / MiB)} MiB)`,
  );
  console.log("| what | RBD back end | directory back end | rbd CLI | rbd bench 16 threads |");
  console.log("| --- | --- | --- | --- | --- |");
  console.log(
    `| first sync (stage in place + commit) | ${f(rate(seedBytes, rbd.seedMs))} MiB/s | ${
      f(rate(seedBytes, directory.seedMs))
    } MiB/s | rbd import ${f(rate(seedBytes, importMs))} MiB/s | seq ${f(benchSeq)} MiB/s |`,
  );
  console.log(
    `| incremental: commit only | ${f(rate(incBytes, rbd.commitMs))} MiB/s (${
      f(rbd.commitMs)
    } ms) | ${f(rate(incBytes, directory.commitMs))} MiB/s (${f(directory.commitMs)} ms) | ` +
      `rbd import-diff ${f(rate(incBytes, importDiffMs))} MiB/s (${f(importDiffMs)} ms) | rand ${
        f(benchRand)
      } MiB/s |`,
  );
  console.log(
    `| incremental: staging (local log) | ${f(rate(incBytes, rbd.stageMs))} MiB/s | ${
      f(rate(incBytes, directory.stageMs))
    } MiB/s | | |`,
  );
  console.log(
    `| peak RSS of the destination process | ${f(rbd.hwmKiB / 1024)} MiB | ${
      f(directory.hwmKiB / 1024)
    } MiB | | |`,
  );
} finally {
  await cephCli(ceph, ["osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"]);
  await Deno.remove(dir, { recursive: true });
}
