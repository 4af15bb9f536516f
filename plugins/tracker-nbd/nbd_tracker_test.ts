import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { Bitmap } from "../../agent/core/mod.ts";
import { NbdClient } from "../../agent/nbd/mod.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { createSparseImage } from "../../fixtures/nbd_tools.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { createNbdTracker, LIVE_DIRTY_FILE } from "./mod.ts";

const BLOCK = 4096;
const SIZE = 64 * BLOCK;

seededTest(
  "copy-before-write: cut.read returns content as of the cut, spilling past the memory bound",
  async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-nbd-cbw-" });
    const image = `${dir}/disk.img`;
    await createSparseImage(image, SIZE);
    const identity = newVolumeIdentity("t", SIZE, BLOCK);
    using none = new Bitmap(SIZE / BLOCK);
    const tracker = await createNbdTracker({
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
      await client.write(0, first);
      assert.equal(tracker.dirtyCount(), SIZE / BLOCK);
      const cut = await tracker.cut();
      assert.equal(tracker.dirtyCount(), 0);
      // Overwrite everything in random pieces while the cut is unreleased.
      for (let i = 0; i < 40; i++) {
        const length = 1 + prng.int(3 * BLOCK);
        const offset = prng.int(SIZE - length);
        await client.write(offset, prng.fill(new Uint8Array(length)));
      }
      await client.write(0, prng.fill(new Uint8Array(SIZE)));
      const preserved = tracker.preservedBytes();
      assert.equal(preserved.memory, 8 * BLOCK);
      assert.equal(preserved.spilled, SIZE - 8 * BLOCK);
      assertBytesEqual(await cut.read(0, SIZE / BLOCK), first, "the cut");
      assertBytesEqual(await cut.read(5, 3), first.subarray(5 * BLOCK, 8 * BLOCK), "blocks 5..7");
      await cut.release();
      assert.equal(tracker.activeCuts, 0);
      assert.deepEqual(
        [...Deno.readDirSync(`${dir}/state`)].filter((e) => e.name.endsWith(".spill")),
        [],
      );
      assert.equal(tracker.dirtyCount(), SIZE / BLOCK);
    } finally {
      await client.close();
      await tracker.close();
    }
    // A clean close saved the live set; the next start picks it up (once).
    assert.ok((await Deno.stat(`${dir}/state/${LIVE_DIRTY_FILE}`)).isFile);
    const again = await createNbdTracker({ imagePath: image, identity, stateDir: `${dir}/state` });
    assert.equal(again.dirtyCount(), SIZE / BLOCK);
    await again.close();
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test("an image of another size than the volume is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-nbd-size-" });
  try {
    await createSparseImage(`${dir}/disk.img`, SIZE + 1);
    await assert.rejects(
      createNbdTracker({
        imagePath: `${dir}/disk.img`,
        identity: newVolumeIdentity("t", SIZE, BLOCK),
        stateDir: `${dir}/state`,
      }),
      /VOLUME_MISMATCH|initialised at/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

seededTest(
  "a 1 TiB sparse volume: a generation of scattered 4 KiB writes stays within 200 MiB of memory",
  async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-nbd-tib-" });
    const size = 1024 ** 4;
    const block = 64 * 1024;
    const image = `${dir}/disk.img`;
    await createSparseImage(image, size);
    const blocks = size / block;
    using none = new Bitmap(blocks);
    const heapBefore = Deno.memoryUsage().heapUsed;
    const tracker = await createNbdTracker({
      imagePath: image,
      identity: newVolumeIdentity("t", size, block),
      stateDir: `${dir}/state`,
      initialDirty: none,
    });
    try {
      // A few real writes, and the bulk as discards (marked the same way, nothing written).
      for (let i = 0; i < 64; i++) {
        await tracker.export.write(prng.int(blocks) * block, prng.fill(new Uint8Array(4096)));
      }
      const first = prng.int(blocks);
      await tracker.export.trim(first * block + 4096, 4096);
      for (let i = 0; i < 1_200_000; i++) {
        await tracker.export.trim(prng.int(blocks) * block + prng.int(16) * 4096, 4096);
      }
      const cut = await tracker.cut();
      assert.equal(cut.pageMask!(first)! & 0b10, 0b10, "the page masks were kept");
      // The masks live on the JS heap (the bitmaps, 2 MiB each, in WASM memory). The test
      // runner's own RSS (~270 MiB here) is no measure of the tracker.
      const grownMiB = (Deno.memoryUsage().heapUsed - heapBefore) / (1024 * 1024);
      assert.ok(cut.dirty.popcount() > 1_100_000);
      assert.ok(grownMiB <= 200, `the tracker's heap grew by ${grownMiB.toFixed(1)} MiB`);
      await cut.release();
    } finally {
      await tracker.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
