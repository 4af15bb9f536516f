// The scan tracker on a real sparse file: holes found with SEEK_DATA/SEEK_HOLE are taken as
// zeros without being read, and every cut finds what a scan reading every byte finds.

import assert from "node:assert/strict";
import { blockEntries } from "../../agent/core/mod.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import type { FileSystem } from "../../agent/fs/file_system.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { SCAN_READ_BYTES } from "./_scan_pass.ts";
import { ScanTracker } from "./scan_tracker.ts";
import { withOpened } from "./_test_volume.ts";

const BLOCK = 4096;
const PIECE_BLOCKS = SCAN_READ_BYTES / BLOCK;

/** `fs` with the image's holes hidden: every byte of it is read, as on a file system without. */
function fullReads(fs: FileSystem): FileSystem {
  return withOpened(fs, (_path, file) => {
    file.extents = undefined;
    return file;
  });
}

/** The runs of blocks of the image whose entry differs from the manifest's. */
async function truth(image: string, sizeBytes: number, manifest: ManifestFile) {
  const entries = blockEntries(await Deno.readFile(image), BLOCK);
  const recorded = await manifest.read(0, manifest.blocks);
  assert.equal(entries.length, recorded.length, `image is ${sizeBytes} bytes`);
  const runs: [number, number][] = [];
  for (let i = 0; i < manifest.blocks; i++) {
    const a = entries.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
    const b = recorded.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
    if (a.every((byte, k) => byte === b[k])) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

async function cutRuns(tracker: ScanTracker): Promise<[number, number][]> {
  const cut = await tracker.cut();
  try {
    return [...cut.dirty.extents()];
  } finally {
    await cut.release();
  }
}

/** Random bytes written at random offsets of a sparse image (lengths up to three blocks). */
async function writeRandom(prng: Prng, fs: FileSystem, image: string, size: number, n: number) {
  const file = await fs.open(image, { write: true });
  for (let w = 0; w < n; w++) {
    const offset = prng.int(size);
    const length = Math.min(1 + prng.int(3 * BLOCK), size - offset);
    await file.write(offset, prng.fill(new Uint8Array(length)));
  }
  file.close();
}

seededTest(
  "on a sparse image a cut skips the holes and finds what reading every byte finds",
  async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-holes-" });
    const fs = new DenoFileSystem();
    try {
      // Six pieces, the last block short; piece 2 stays a hole, piece 4 is fragmented into
      // more extents than one query returns.
      const blocks = 6 * PIECE_BLOCKS;
      const size = blocks * BLOCK - 1 - prng.int(BLOCK - 1);
      const image = `${dir}/image`;
      const file = await fs.open(image, { create: true });
      await file.truncate(size);
      file.close();
      await writeRandom(prng, fs, image, 2 * PIECE_BLOCKS * BLOCK, 20);
      const fragmented = await fs.open(image, { write: true });
      for (let b = 4 * PIECE_BLOCKS; b < 5 * PIECE_BLOCKS; b += 2) {
        await fragmented.write(b * BLOCK + prng.int(BLOCK), new Uint8Array([1 + prng.int(255)]));
      }
      await fragmented.write(size - 1, new Uint8Array([7]));
      fragmented.close();
      const probe = await fs.open(image);
      const extents = await probe.extents!(0, size);
      probe.close();
      assert.ok(extents.some((e) => !e.data), "the test file system keeps holes");

      const identity = newVolumeIdentity("holes", size, BLOCK);
      const manifest = await ManifestFile.open(fs, `${dir}/manifest`, blocks, { create: true });
      await manifest.write(0, blockEntries(await Deno.readFile(image), BLOCK));
      await manifest.sync();
      const secret = prng.fill(new Uint8Array(32));
      const tracker = (withHoles: boolean, prefilter: boolean) =>
        new ScanTracker({
          imagePath: image,
          identity,
          manifest,
          baselineGeneration: 0,
          fs: withHoles ? fs : fullReads(fs),
          workers: 1,
          prefilter: prefilter ? { tablePath: `${dir}/${withHoles}.prefilter`, secret } : undefined,
        });
      const sparse = tracker(true, true);
      const sparsePlain = tracker(true, false);
      const full = tracker(false, true);

      const expectSame = async (expected: [number, number][]) => {
        for (const t of [sparse, sparsePlain, full]) {
          assert.deepStrictEqual(await cutRuns(t), expected);
        }
        for (const t of [sparse, sparsePlain]) {
          const scan = t.lastScan!;
          assert.ok(scan.holeBytes > 0);
          assert.equal(scan.bytesRead + scan.holeBytes, size);
        }
        assert.equal(full.lastScan!.holeBytes, 0);
        assert.equal(full.lastScan!.bytesRead, size);
      };
      await expectSame([]);

      // Holes turned into data, data punched into holes (aligned and not), data zeroed.
      await writeRandom(prng, fs, image, size, 15);
      const punch = await fs.open(image, { write: true });
      for (let p = 0; p < 10; p++) {
        const offset = prng.int(size);
        const length = Math.min(1 + prng.int(4 * BLOCK), size - offset);
        assert.ok(await punch.punchHole(offset, length));
      }
      const block = prng.int(2 * PIECE_BLOCKS);
      assert.ok(await punch.punchHole(block * BLOCK, BLOCK));
      await punch.write(prng.int(size - BLOCK), new Uint8Array(BLOCK));
      punch.close();
      const expected = await truth(image, size, manifest);
      assert.ok(expected.length > 0);
      await expectSame(expected);
      for (const t of [sparse, sparsePlain, full]) await t.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
