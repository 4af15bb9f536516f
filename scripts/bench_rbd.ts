/**
 * RBD write benchmark (issue 18): presync's aio write window (`plugins/store-rbd`) against
 * `rbd bench --io-type write` at the same I/O size and queue depth, side by side on the same
 * single-node cluster, alternating which runs first. Each run writes a fresh image and ends
 * with a flush (rbd bench flushes at its end too); the median of the runs is reported.
 *
 *     deno run -A scripts/bench_rbd.ts [--total-mib 256] [--runs 5] [--io-kib 64] [--depth 16]
 *                                      [--conf PATH --pool NAME]
 *
 * Both sides run with librbd's writeback cache as the rbd CLI sets it (writeback from the first
 * write), then both with the cache off (`rbd_cache=false`), where every write waits for the OSD.
 * With the cache off it also times synchronous writes (one at a time, QD1): the round-trip
 * bound baseline the window exists to beat.
 *
 * Without `--conf` it starts (or joins) the test cluster of `scripts/ceph_dev.sh`, leased to
 * this process.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { rbdCli, sharedCephCluster, uniqueName } from "../fixtures/ceph.ts";
import { AioWindow, RadosCluster, type RbdPool } from "../plugins/store-rbd/mod.ts";
import { median } from "./_bench_timing.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "total-mib": { type: "string", default: "256" },
    runs: { type: "string", default: "5" },
    "io-kib": { type: "string", default: "64" },
    depth: { type: "string", default: "16" },
    conf: { type: "string" },
    pool: { type: "string", default: "rbd" },
  },
});

const TOTAL = Number(values["total-mib"]) * 2 ** 20;
const RUNS = Number(values.runs);
const IO = Number(values["io-kib"]) * 1024;
const DEPTH = Number(values.depth);
const IMAGE_BYTES = TOTAL;
const QD1_BYTES = Math.min(TOTAL, 32 * 2 ** 20);

const confPath = values.conf ?? (await sharedCephCluster()).confPath;
const cephEnv = { confPath };

/** Offsets of `bytes / IO` writes: in order, or shuffled (seeded, the same every run). */
function offsets(bytes: number, pattern: "seq" | "rand"): number[] {
  const list = Array.from({ length: bytes / IO }, (_, i) => i * IO);
  if (pattern === "rand") {
    let s = 42;
    for (let i = list.length - 1; i > 0; i--) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      const j = s % (i + 1);
      [list[i], list[j]] = [list[j], list[i]];
    }
  }
  return list;
}

/** MiB/s of our window writing TOTAL bytes into a fresh image, flush included. */
async function ours(pool: RbdPool, pattern: "seq" | "rand", depth: number, bytes: number) {
  const name = uniqueName("bench-ours");
  await pool.createImage(name, IMAGE_BYTES);
  try {
    await using image = await pool.openImage(name);
    const data = crypto.getRandomValues(new Uint8Array(IO));
    const start = performance.now();
    if (depth === 1) {
      for (const offset of offsets(bytes, pattern)) await image.write(offset, data);
    } else {
      const window = new AioWindow(image, depth);
      for (const offset of offsets(bytes, pattern)) await window.write(offset, data);
      await window.drain();
    }
    await image.flush();
    return bytes / 2 ** 20 / ((performance.now() - start) / 1000);
  } finally {
    await pool.removeImage(name);
  }
}

/** MiB/s that `rbd bench` reports writing TOTAL bytes into a fresh image. */
async function rbdBench(pattern: "seq" | "rand", cache: boolean) {
  const name = uniqueName("bench-rbd");
  const spec = `${values.pool}/${name}`;
  await rbdCli(cephEnv, ["create", "--size", `${IMAGE_BYTES / 2 ** 20}M`, spec]);
  try {
    const out = await rbdCli(cephEnv, [
      `--rbd_cache=${cache}`,
      "bench",
      "--io-type",
      "write",
      "--io-size",
      String(IO),
      "--io-threads",
      String(DEPTH),
      "--io-total",
      String(TOTAL),
      "--io-pattern",
      pattern,
      spec,
    ]);
    const opsPerSecond = Number(/ops\/sec:\s*([\d.]+)/.exec(out)?.[1]);
    if (!Number.isFinite(opsPerSecond)) throw new Error(`cannot read rbd bench output:\n${out}`);
    return (opsPerSecond * IO) / 2 ** 20;
  } finally {
    await rbdCli(cephEnv, ["rm", "--no-progress", spec]);
  }
}

const rows: string[] = [];
const kib = IO / 1024;
for (const cache of [true, false]) {
  await using cluster = await RadosCluster.connect({
    confPath,
    config: { rbd_cache: String(cache) },
  });
  const pool = cluster.openPool(values.pool!);
  const mode = cache ? "cache writeback" : "cache off";
  for (const pattern of ["seq", "rand"] as const) {
    const mine: number[] = [];
    const theirs: number[] = [];
    const qd1: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      if (run % 2 === 0) {
        mine.push(await ours(pool, pattern, DEPTH, TOTAL));
        theirs.push(await rbdBench(pattern, cache));
      } else {
        theirs.push(await rbdBench(pattern, cache));
        mine.push(await ours(pool, pattern, DEPTH, TOTAL));
      }
      if (!cache) qd1.push(await ours(pool, pattern, 1, QD1_BYTES));
    }
    const [m, t] = [median(mine), median(theirs)];
    rows.push(
      `| ${pattern} write ${kib} KiB, ${mode}, ${DEPTH} in flight | ${m.toFixed(0)} MiB/s | ` +
        `rbd bench --io-threads ${DEPTH}: ${t.toFixed(0)} MiB/s | ${(m / t).toFixed(2)}× |`,
    );
    if (!cache) {
      const q = median(qd1);
      rows.push(
        `| ${pattern} write ${kib} KiB, ${mode}, one at a time (QD1) | ${q.toFixed(0)} MiB/s | ` +
          `our window of ${DEPTH}: ${m.toFixed(0)} MiB/s | ${(q / m).toFixed(2)}× |`,
      );
    }
    const list = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
    console.error(`${mode} ${pattern}: ours ${list(mine)}; rbd bench ${list(theirs)} MiB/s`);
  }
}
console.log(
  `${TOTAL / 2 ** 20} MiB per run, median of ${RUNS} runs (QD1: ${QD1_BYTES / 2 ** 20} MiB)`,
);
console.log("| what | presync | baseline | ratio |\n| --- | --- | --- | --- |");
for (const row of rows) console.log(row);
