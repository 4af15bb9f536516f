import assert from "node:assert/strict";
import { Prng } from "../../fixtures/prng.ts";
import { Bitmap } from "../core/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { SourceState } from "../source/source_state.ts";
import type { Cut } from "../tracker.ts";
import { blockCount, newVolumeIdentity, type VolumeIdentity } from "../volume/volume_identity.ts";
import type { Destination, StagedBlock } from "./destination.ts";
import { FLUSH_EVERY_BYTES, sendGeneration } from "./send_generation.ts";

const MiB = 1024 * 1024;
const ROOT = "00".repeat(32);

/**
 * A destination that logs every block staged and every flush asked for, and reports the
 * largest number of block bytes that could have been lost at any moment: with at most one
 * flush in flight, everything before the flush preceding the last one is acknowledged.
 */
function countingDestination(identity: VolumeIdentity, concurrentFlush: boolean) {
  const flushedAt: number[] = []; // staged byte count at each flush call
  let staged = 0;
  let worst = 0;
  const destination: Destination = {
    concurrentFlush,
    resumeInfo: () => ({
      identity,
      committedGeneration: 0,
      merkleRoot: ROOT,
      cutTimeMs: 0,
      staged: null,
    }),
    beginGeneration: () => Promise.resolve(),
    stage(blocks: StagedBlock[]) {
      for (const b of blocks) {
        staged += b.data?.length ?? 0;
        // Acknowledged for sure: up to the flush before the last one (concurrent), or up to
        // the last one (each flush awaited).
        const acked = flushedAt.at(concurrentFlush ? -2 : -1) ?? 0;
        worst = Math.max(worst, staged - acked);
      }
      return Promise.resolve({ staged: blocks.length, duplicates: 0, rejected: [] });
    },
    flush() {
      flushedAt.push(staged);
      return Promise.resolve();
    },
    commit: (committedGeneration) =>
      Promise.resolve({ committedGeneration, merkleRoot: ROOT, cutTimeMs: 0 }),
  };
  return { destination, worst: () => worst, flushes: () => flushedAt.length };
}

async function sendWith(blockSize: number, sizeBytes: number, concurrentFlush: boolean) {
  const root = await Deno.makeTempDir({ prefix: "presync-send-" });
  try {
    const identity = newVolumeIdentity("vm", sizeBytes, blockSize);
    const image = new Prng(blockSize).fill(new Uint8Array(sizeBytes));
    const state = await SourceState.init(new DenoFileSystem(), `${root}/state`, identity);
    try {
      const dirty = new Bitmap(blockCount(identity)).setRange(0, blockCount(identity));
      const cut: Cut = {
        dirty,
        pointInTime: true,
        read: (first, count) =>
          Promise.resolve(image.slice(first * blockSize, (first + count) * blockSize)),
        release: () => Promise.resolve(dirty.free()),
      };
      await state.recordCut(dirty, 0);
      const d = countingDestination(identity, concurrentFlush);
      const report = await sendGeneration(state, cut, d.destination);
      report.sent.free();
      await cut.release();
      return { worst: d.worst(), flushes: d.flushes() };
    } finally {
      state.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("send: with a flush in flight, never more than FLUSH_EVERY_BYTES is unacknowledged", async () => {
  // Block sizes that divide the flush interval, the largest allowed, and a short last block.
  for (
    const [blockSize, size] of [[65536, 40 * MiB + 12345], [4 * MiB, 41 * MiB], [4096, 20 * MiB]]
  ) {
    const { worst, flushes } = await sendWith(blockSize, size, true);
    assert.ok(worst <= FLUSH_EVERY_BYTES, `${blockSize}-byte blocks: ${worst} bytes at risk`);
    assert.ok(worst > FLUSH_EVERY_BYTES / 2, "flushes are not more frequent than they need be");
    assert.ok(flushes >= Math.ceil(size / (FLUSH_EVERY_BYTES / 2)));
  }
});

Deno.test("send: a destination that awaits each flush gets one every FLUSH_EVERY_BYTES", async () => {
  const { worst, flushes } = await sendWith(65536, 40 * MiB, false);
  assert.equal(worst, FLUSH_EVERY_BYTES);
  assert.equal(flushes, 3);
});
