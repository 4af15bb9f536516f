/**
 * Cost of keeping generations in a directory store (`serve --keep N`, undo logs): the same
 * incremental generations committed into a store keeping 1 and one keeping 3, on the real
 * disk under one temporary directory, interleaved commit by commit so both see the same
 * machine load. Reports each commit's time (the `commit` call: prepare, undo log, apply)
 * and the bytes the undo logs and the whole volume take.
 *
 *     deno run -A scripts/bench_dir_keep.ts [--size-mib 256] [--changed 0.1] [--generations 6]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Bitmap, blake3, blockEntries } from "../agent/core/mod.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { toHex } from "../agent/hex.ts";
import { ReplicaStore } from "../agent/store/replica_store.ts";
import type { ReplicaVolume } from "../agent/store/replica_volume.ts";
import { newVolumeIdentity } from "../agent/volume/volume_identity.ts";
import { Prng } from "../fixtures/prng.ts";
import { DirectoryBackend } from "../plugins/store-directory/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "256" },
    changed: { type: "string", default: "0.1" },
    generations: { type: "string", default: "6" },
  },
});
const SIZE = Number(values["size-mib"]) << 20;
const BLOCK = 64 << 10;
const BLOCKS = SIZE / BLOCK;
const CHANGED = Math.round(BLOCKS * Number(values.changed));
const GENERATIONS = Number(values.generations);
const MiB = 1 << 20;

const dir = await Deno.makeTempDir({ prefix: "presync-bench-keep-" });
const fs = new DenoFileSystem();
const image = new Uint8Array(SIZE);
const prng = new Prng(0x6b656570);

async function send(replica: ReplicaVolume, g: number, blocks: number[]): Promise<number> {
  using dirty = new Bitmap(BLOCKS);
  for (const b of blocks) dirty.set(b);
  await replica.beginGeneration(g, dirty, g);
  for (let at = 0; at < blocks.length; at += 64) {
    await replica.stage(
      blocks.slice(at, at + 64).map((block) => {
        const data = image.slice(block * BLOCK, (block + 1) * BLOCK);
        return { block, data, hash: blake3(data) };
      }),
    );
  }
  await replica.flush();
  const root = toHex(blake3(blockEntries(image, BLOCK)));
  const start = performance.now();
  await replica.commit(g, root);
  return performance.now() - start;
}

async function duBytes(path: string): Promise<number> {
  const out = await new Deno.Command("du", { args: ["-sb", path] }).output();
  return Number(new TextDecoder().decode(out.stdout).split("\t")[0]);
}

try {
  const sides = [];
  for (const keep of [1, 3]) {
    const store = new ReplicaStore(new DirectoryBackend(fs, `${dir}/keep${keep}`, { keep }));
    const replica = await store.init(newVolumeIdentity("bench", SIZE, BLOCK));
    sides.push({ keep, store, replica, ms: [] as number[] });
  }
  for (let g = 1; g <= GENERATIONS; g++) {
    const blocks: number[] = [];
    if (g === 1) {
      for (let b = 0; b < BLOCKS; b++) blocks.push(b);
      prng.fill(image);
    } else {
      const set = new Set<number>();
      while (set.size < CHANGED) set.add(prng.int(BLOCKS));
      blocks.push(...[...set].sort((a, b) => a - b));
      for (const b of blocks) prng.fill(image.subarray(b * BLOCK, (b + 1) * BLOCK));
    }
    for (const side of sides) {
      const ms = await send(side.replica, g, blocks);
      if (g > 1) side.ms.push(ms);
    }
  }
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  console.log(
    `${SIZE / MiB} MiB volume, 64 KiB blocks, ${GENERATIONS - 1} incremental generations of ` +
      `${CHANGED} blocks (${(CHANGED * BLOCK / MiB).toFixed(1)} MiB) each; load ${load}`,
  );
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const base = median(sides[0].ms);
  for (const side of sides) {
    side.replica.close();
    const root = `${dir}/keep${side.keep}/bench`;
    const undo = side.keep > 1 ? await duBytes(`${root}/undo`) : 0;
    const m = median(side.ms);
    console.log(
      `keep ${side.keep}: commit median ${m.toFixed(0)} ms (${(m / base).toFixed(2)}x), ` +
        `all ${side.ms.map((x) => x.toFixed(0)).join(" ")} ms; undo logs ${
          (undo / MiB).toFixed(1)
        } MiB; volume ${((await duBytes(root)) / MiB).toFixed(1)} MiB`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
