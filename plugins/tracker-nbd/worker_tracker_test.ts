import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { Bitmap } from "../../agent/core/mod.ts";
import { ErrorCode } from "../../agent/errors.ts";
import { NbdClient } from "../../agent/nbd/mod.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { maskPopcount } from "../../agent/volume/page_masks.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { createSparseImage } from "../../fixtures/nbd_tools.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { LIVE_DIRTY_FILE } from "./mod.ts";
import { WorkerNbdTracker } from "./worker_tracker.ts";

const BLOCK = 4096;
const SIZE = 64 * BLOCK;

seededTest(
  "worker tracker: marks exactly the written blocks; a cut reads as of the cut while the VM overwrites",
  async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-nbd-worker-" });
    const image = `${dir}/disk.img`;
    await createSparseImage(image, SIZE);
    const identity = newVolumeIdentity("t", SIZE, BLOCK);
    using none = new Bitmap(SIZE / BLOCK);
    const tracker = await WorkerNbdTracker.create({
      imagePath: image,
      identity,
      stateDir: `${dir}/state`,
      listen: [{ transport: "unix", path: `${dir}/s.sock` }],
      initialDirty: none,
      preserveMemoryBytes: 8 * BLOCK, // the rest spills
    });
    const client = await NbdClient.connect(tracker.addresses[0], "t");
    try {
      const first = prng.fill(new Uint8Array(SIZE));
      await client.write(0, first.subarray(0, 10 * BLOCK));
      await client.write(40 * BLOCK, first.subarray(40 * BLOCK, 41 * BLOCK + 1));
      const partial = await tracker.cut();
      assert.deepEqual([...partial.dirty.extents()], [
        [0, 10],
        [40, 2],
      ]);
      await partial.release();
      await client.write(0, first);
      const cut = await tracker.cut();
      assert.equal(cut.pointInTime, true);
      assert.equal(cut.dirty.popcount(), SIZE / BLOCK);
      // Overwrite everything in random pieces while the cut is unreleased.
      for (let i = 0; i < 40; i++) {
        const length = 1 + prng.int(3 * BLOCK);
        const offset = prng.int(SIZE - length);
        await client.write(offset, prng.fill(new Uint8Array(length)));
      }
      const last = prng.fill(new Uint8Array(SIZE));
      await client.write(0, last);
      assertBytesEqual(await cut.read(0, SIZE / BLOCK), first, "the cut");
      assertBytesEqual(await cut.read(5, 3), first.subarray(5 * BLOCK, 8 * BLOCK), "blocks 5..7");
      await cut.release();
      const next = await tracker.cut();
      assert.equal(next.dirty.popcount(), SIZE / BLOCK);
      assertBytesEqual(await next.read(0, SIZE / BLOCK), last, "the next cut");
      await next.release();
      // A resumed cut reads the current bytes.
      using some = new Bitmap(SIZE / BLOCK).setRange(3, 2);
      const resumed = await tracker.resume(some);
      assert.equal(resumed.pointInTime, false);
      assert.equal(resumed.dirty.popcount(), 2);
      assertBytesEqual(
        await resumed.read(3, 2),
        last.subarray(3 * BLOCK, 5 * BLOCK),
        "the resumed cut",
      );
      await resumed.release();
      await client.write(7 * BLOCK, new Uint8Array(BLOCK).fill(1));
    } finally {
      await client.close();
      await tracker.close();
    }
    // A clean close saved the live set (block 7) for the next start.
    assert.ok((await Deno.stat(`${dir}/state/${LIVE_DIRTY_FILE}`)).isFile);
    const again = await WorkerNbdTracker.create({
      imagePath: image,
      identity,
      stateDir: `${dir}/state`,
    });
    const cut = await again.cut();
    assert.deepEqual([...cut.dirty.extents()], [[7, 1]]);
    await cut.release();
    await again.close();
    await assertRejectsCode(again.cut(), ErrorCode.INVALID_ARGUMENT);
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test("worker tracker: errors cross the thread with their code", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-nbd-worker-" });
  try {
    await createSparseImage(`${dir}/disk.img`, SIZE + 1);
    await assertRejectsCode(
      WorkerNbdTracker.create({
        imagePath: `${dir}/disk.img`,
        identity: newVolumeIdentity("t", SIZE, BLOCK),
        stateDir: `${dir}/state`,
      }),
      ErrorCode.VOLUME_MISMATCH,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

seededTest(
  "worker tracker: a cut names the 4 KiB pages the VM wrote in each block; resumed cuts none",
  async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-nbd-pages-" });
    const block = 64 * 1024;
    const size = 10 * block + 5000; // the last block is short: two pages, the second partial
    const image = `${dir}/disk.img`;
    await createSparseImage(image, size);
    const identity = newVolumeIdentity("t", size, block);
    using none = new Bitmap(11);
    const tracker = await WorkerNbdTracker.create({
      imagePath: image,
      identity,
      stateDir: `${dir}/state`,
      listen: [{ transport: "unix", path: `${dir}/s.sock` }],
      initialDirty: none,
    });
    const client = await NbdClient.connect(tracker.addresses[0], "t");
    try {
      // Page-sized and unaligned writes; the model is the union of pages each one touched.
      const expected = new Map<number, number>();
      for (let i = 0; i < 12; i++) {
        const length = 1 + prng.int(6000);
        const offset = prng.int(size - length);
        await client.write(offset, prng.fill(new Uint8Array(length)));
        for (let at = offset; at < offset + length; at = (Math.floor(at / 4096) + 1) * 4096) {
          const b = Math.floor(at / block);
          expected.set(b, ((expected.get(b) ?? 0) | (1 << Math.floor((at % block) / 4096))) >>> 0);
        }
      }
      await client.write(3 * block, new Uint8Array(block)); // a whole block: no mask
      expected.set(3, 0xFFFF);
      const pagesBefore = tracker.changesNow();
      pagesBefore.blocks.free();
      assert.equal(
        pagesBefore.pages,
        [...expected.values()].reduce((sum, mask) => sum + maskPopcount(mask), 0),
        "status counts the pages written since the last cut",
      );
      const cut = await tracker.cut();
      const pagesAfter = tracker.changesNow();
      pagesAfter.blocks.free();
      assert.equal(pagesAfter.pages, 0, "none since the cut");
      assert.deepEqual(
        [...cut.dirty.extents()].flatMap(([s, n]) => Array.from({ length: n }, (_, k) => s + k)),
        [...expected.keys()].sort((a, b) => a - b),
      );
      for (const [b, mask] of expected) {
        assert.equal(cut.pageMask!(b), mask === 0xFFFF ? undefined : mask, `block ${b}`);
      }
      await cut.release();
      // Only whole blocks written: the cut still knows its pages (none partial), so a fold
      // with it keeps the other cut's masks instead of asking page digests.
      await client.write(5 * block, new Uint8Array(block).fill(7));
      const whole = await tracker.cut();
      assert.ok(whole.pageMask, "a cut of whole blocks knows its pages");
      assert.equal(whole.pageMask(5), undefined, "block 5 whole");
      await whole.release();
      using all = new Bitmap(11).setRange(0, 11);
      const resumed = await tracker.resume(all);
      assert.equal(resumed.pageMask, undefined, "a resumed cut knows no pages");
      await resumed.release();
    } finally {
      await client.close();
      await tracker.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** The tracker's set of blocks written since the last cut, as block numbers. */
function changedNow(tracker: WorkerNbdTracker): number[] {
  const changes = tracker.changesNow();
  try {
    assert.equal(changes.exact, true, "the NBD tracker sees every write");
    return [...changes.blocks.extents()].flatMap(([start, length]) =>
      Array.from({ length }, (_, i) => start + i)
    );
  } finally {
    changes.blocks.free();
  }
}

seededTest(
  "worker tracker: changesNow is exactly the set of blocks written since the last cut",
  async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-nbd-worker-" });
    const blocks = 8192;
    const image = `${dir}/disk.img`;
    await createSparseImage(image, blocks * BLOCK);
    using none = new Bitmap(blocks);
    const tracker = await WorkerNbdTracker.create({
      imagePath: image,
      identity: newVolumeIdentity("t", blocks * BLOCK, BLOCK),
      stateDir: `${dir}/state`,
      listen: [{ transport: "unix", path: `${dir}/s.sock` }],
      initialDirty: none,
    });
    const client = await NbdClient.connect(tracker.addresses[0], "t");
    try {
      assert.deepEqual(changedNow(tracker), []);
      const written = new Set<number>();
      const sorted = () => [...written].sort((a, b) => a - b);
      // Rewrites of a small hot range and writes anywhere, some across block boundaries.
      for (let i = 0; i < 60; i++) {
        const length = 1 + prng.int(3 * BLOCK);
        const offset = i % 2 ? prng.int(16 * BLOCK) : prng.int(blocks * BLOCK - length);
        await client.write(offset, prng.fill(new Uint8Array(length)));
        const last = Math.floor((offset + length - 1) / BLOCK);
        for (let b = Math.floor(offset / BLOCK); b <= last; b++) written.add(b);
        assert.deepEqual(changedNow(tracker), sorted(), `after write ${i}`);
      }
      const cut = await tracker.cut();
      assert.equal(cut.dirty.popcount(), written.size);
      assert.deepEqual(changedNow(tracker), [], "a cut starts a fresh dirty set");
      // A write over more blocks than are tested one by one, and one inside it again.
      await client.write(100 * BLOCK + 7, new Uint8Array(5000 * BLOCK).fill(7));
      await client.write(200 * BLOCK, new Uint8Array(BLOCK).fill(8));
      const big = changedNow(tracker);
      assert.equal(big.length, 5001);
      assert.equal(big[0], 100);
      assert.equal(big.at(-1), 5100);
      await cut.release();
    } finally {
      await client.close();
      await tracker.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
