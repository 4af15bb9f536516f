/**
 * Measures the block order of background sync: "cold first" (blocks dirty in the previous
 * generation are sent last) against plain block order, side by side on the same seeded
 * workload: a hot set rewritten all the time, also while a generation is being sent, and a
 * cold tail written rarely. Counts the blocks sent over the same number of generations.
 *
 *     deno run -A scripts/bench_order.ts [--generations 12] [--seed 7]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ScanTracker } from "../plugins/tracker-scan/scan_tracker.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { SourceState } from "../agent/source/source_state.ts";
import { ReplicaStore } from "../agent/store/replica_store.ts";
import { DirectoryBackend } from "../plugins/store-directory/mod.ts";
import type { Destination } from "../agent/sync/destination.ts";
import { sendGeneration } from "../agent/sync/send_generation.ts";
import { newVolumeIdentity } from "../agent/volume/volume_identity.ts";
import type { Bitmap } from "../agent/core/mod.ts";
import { Prng } from "../fixtures/prng.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    generations: { type: "string", default: "12" },
    seed: { type: "string", default: "7" },
  },
});
const BLOCK = 64 * 1024;
const BLOCKS = 2048; // 128 MiB
const HOT = 128; // the hot set: 8% of the blocks
const fs = new DenoFileSystem();

async function run(coldFirst: boolean): Promise<{ blocks: number; bytes: number }> {
  const prng = new Prng(Number(values.seed));
  const root = await Deno.makeTempDir({ prefix: "presync-order-" });
  try {
    const image = `${root}/image`;
    const file = await Deno.open(image, { write: true, create: true });
    await file.truncate(BLOCKS * BLOCK);
    await file.write(prng.fill(new Uint8Array(BLOCKS * BLOCK)));
    const identity = newVolumeIdentity("order", BLOCKS * BLOCK, BLOCK);
    const state = await SourceState.init(fs, `${root}/state`, identity);
    const replica = await new ReplicaStore(new DirectoryBackend(fs, `${root}/store`)).init(
      identity,
    );
    const hotBlocks = Array.from({ length: HOT }, () => prng.int(BLOCKS));
    const write = async (block: number) => {
      await file.seek(block * BLOCK + prng.int(BLOCK - 16), Deno.SeekMode.Start);
      await file.write(prng.fill(new Uint8Array(16)));
    };
    // The "VM": while a generation is being sent, a few hot blocks and, rarely, a cold one
    // are written between two batches.
    const live: Destination = {
      resumeInfo: () => replica.resumeInfo(),
      beginGeneration: (g, d, t) => replica.beginGeneration(g, d, t),
      stage: async (blocks) => {
        for (let i = 0; i < 8; i++) await write(hotBlocks[prng.int(HOT)]);
        if (prng.int(4) === 0) await write(prng.int(BLOCKS));
        return await replica.stage(blocks);
      },
      flush: () => replica.flush(),
      commit: (g, r) => replica.commit(g, r),
    };
    let blocks = 0;
    let bytes = 0;
    let hot: Bitmap | undefined;
    for (let generation = 0; generation <= Number(values.generations); generation++) {
      const tracker = new ScanTracker({
        imagePath: image,
        identity,
        manifest: state.manifest,
        baselineGeneration: state.committedGeneration,
      });
      const cut = await tracker.cut();
      await state.recordCut(cut.dirty, Date.now());
      const report = await sendGeneration(state, cut, live, { hot: coldFirst ? hot : undefined });
      hot?.free();
      hot = cut.dirty.clone();
      await cut.release();
      // Generation 0 is the initial full copy: the same for both orders, not counted.
      if (generation > 0) {
        blocks += report.sent.popcount();
        bytes += report.bytesSent;
      }
      report.sent.free();
      for (let i = 0; i < 32; i++) await write(hotBlocks[prng.int(HOT)]);
      for (let i = 0; i < 4; i++) await write(prng.int(BLOCKS));
    }
    hot?.free();
    file.close();
    replica.close();
    state.close();
    return { blocks, bytes };
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const plain = await run(false);
const coldFirst = await run(true);
console.log(`${values.generations} generations after the initial copy, seed ${values.seed}\n`);
console.log("| order | blocks sent | bytes sent |");
console.log("|---|---|---|");
console.log(`| block order | ${plain.blocks} | ${plain.bytes} |`);
console.log(
  `| cold first (previous generation's dirty blocks last) | ${coldFirst.blocks} | ${coldFirst.bytes} |`,
);
console.log(
  `\ncold first sends ${(coldFirst.bytes / plain.bytes).toFixed(3)}× the bytes of block order`,
);
