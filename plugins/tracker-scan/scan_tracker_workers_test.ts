// The scan on worker threads: each worker reads its own pieces of the real image file, and
// the cuts, pre-filter tables and costs are exactly those of the scan on one thread; a piece
// a worker cannot read, or a worker that dies, fails the scan with a typed error.

import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { Bitmap, blockEntries } from "../../agent/core/mod.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { RateLimiter } from "../../agent/rate_limiter.ts";
import { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import type { PiecePlan } from "./_piece_examine.ts";
import { SCAN_READ_BYTES, scanPass } from "./_scan_pass.ts";
import { ScanWorkers, type ScanWorkerSetup } from "./_scan_workers.ts";
import { ScanTracker } from "./scan_tracker.ts";

const BLOCK = 4096;
const PIECE_BLOCKS = SCAN_READ_BYTES / BLOCK;
const fs = new DenoFileSystem();

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "presync-scan-workers-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The runs of blocks of `image` whose entry differs from the manifest's. */
async function truth(image: string, manifest: ManifestFile): Promise<[number, number][]> {
  const dirty = new Bitmap(manifest.blocks);
  try {
    const entries = blockEntries(await Deno.readFile(image), BLOCK);
    const recorded = await manifest.read(0, manifest.blocks);
    const bytes = entries.length / manifest.blocks;
    for (let i = 0; i < manifest.blocks; i++) {
      const at = i * bytes;
      if (entries.subarray(at, at + bytes).some((b, k) => b !== recorded[at + k])) dirty.set(i);
    }
    return [...dirty.extents()];
  } finally {
    dirty.free();
  }
}

async function cutRuns(tracker: ScanTracker): Promise<[number, number][]> {
  const cut = await tracker.cut();
  try {
    return [...cut.dirty.extents()];
  } finally {
    await cut.release();
  }
}

/** Guest-like writes: random bytes, zeroed runs and punched holes, at random offsets. */
async function scribble(prng: Prng, image: string, size: number, writes: number) {
  const file = await fs.open(image, { write: true });
  try {
    for (let w = 0; w < writes; w++) {
      const offset = prng.int(size);
      const length = Math.min(1 + prng.int(3 * BLOCK), size - offset);
      const kind = prng.int(4);
      if (kind === 0) assert.ok(await file.punchHole(offset, length));
      else {
        const bytes = new Uint8Array(length);
        if (kind !== 1) prng.fill(bytes);
        await file.write(offset, bytes);
      }
    }
  } finally {
    file.close();
  }
}

seededTest(
  "scan workers find what one thread finds and write the same pre-filter table, byte for byte",
  async (prng) => {
    await inTempDir(async (dir) => {
      // Five and a bit pieces, the last block short; piece 1 stays a hole, a few blocks zero.
      const blocks = 5 * PIECE_BLOCKS + 17;
      const size = blocks * BLOCK - 1 - prng.int(BLOCK - 1);
      const image = `${dir}/image`;
      const file = await fs.open(image, { create: true });
      await file.truncate(size);
      for (let b = 0; b < blocks; b++) {
        if (b >= PIECE_BLOCKS && b < 2 * PIECE_BLOCKS) continue;
        const bytes = new Uint8Array(Math.min(BLOCK, size - b * BLOCK));
        if (prng.int(6) !== 0) prng.fill(bytes);
        await file.write(b * BLOCK, bytes);
      }
      file.close();
      const identity = newVolumeIdentity("workers", size, BLOCK);
      const manifest = await ManifestFile.open(fs, `${dir}/manifest`, blocks, { create: true });
      await manifest.write(0, blockEntries(await Deno.readFile(image), BLOCK));
      const secret = prng.fill(new Uint8Array(32));
      const tracker = (workers: number, prefilter = true) =>
        new ScanTracker({
          imagePath: image,
          identity,
          manifest,
          baselineGeneration: 0,
          workers,
          prefilter: prefilter ? { tablePath: `${dir}/${workers}.prefilter`, secret } : undefined,
        });
      const trackers = [tracker(1), tracker(2), tracker(3)];
      const plain = [tracker(1, false), tracker(2, false)];
      const tables = () =>
        Promise.all([1, 2, 3].map((n) => Deno.readFile(`${dir}/${n}.prefilter`)));

      const expectSame = async (expected: [number, number][]) => {
        for (const t of [...trackers, ...plain]) assert.deepStrictEqual(await cutRuns(t), expected);
        for (const group of [trackers, plain]) {
          const costs = group.map((t) => {
            const { bytesRead, holeBytes, blocksHashed, bytesHashed, dirtyBlocks } = t.lastScan!;
            return { bytesRead, holeBytes, blocksHashed, bytesHashed, dirtyBlocks };
          });
          for (const cost of costs) assert.deepStrictEqual(cost, costs[0]);
          assert.ok(costs[0].holeBytes > 0);
          assert.equal(costs[0].bytesRead + costs[0].holeBytes, size);
        }
        const [one, ...others] = await tables();
        for (const other of others) assertBytesEqual(other, one, "the pre-filter table");
      };
      // The first cut builds the tables; the second trusts them and hashes nothing.
      await expectSame([]);
      await expectSame([]);
      assert.equal(trackers[2].lastScan!.blocksHashed, 0);
      assert.equal(trackers[2].lastScan!.prefiltered, true);

      await scribble(prng, image, size, 60);
      const expected = await truth(image, manifest);
      assert.ok(expected.length > 0);
      await expectSame(expected);
      assert.ok(trackers[1].lastScan!.blocksHashed > 0);
      assert.ok(trackers[1].lastScan!.blocksHashed < plain[1].lastScan!.blocksHashed);
      for (const t of [...trackers, ...plain]) await t.close();
      manifest.close();
    });
  },
);

/** A setup for workers over `path`, `sizeBytes` long, and a plan reading it whole. */
function oneWholePiece(path: string, sizeBytes: number): [ScanWorkerSetup, PiecePlan] {
  const count = sizeBytes / BLOCK;
  return [
    { path, sizeBytes, blockSize: BLOCK, pieceBytes: sizeBytes, secret: null },
    {
      first: 0,
      count,
      offset: 0,
      length: sizeBytes,
      extents: [{ at: 0, length: sizeBytes, data: true }],
      manifest: new Uint8Array(count * 48),
      table: null,
    },
  ];
}

Deno.test("a piece a scan worker cannot read fails with IO; the next pass works", async () => {
  await inTempDir(async (dir) => {
    const short = `${dir}/short`;
    await Deno.writeFile(short, new Uint8Array(BLOCK).fill(1));
    const workers = new ScanWorkers(2);
    try {
      const [missing, wholeOfMissing] = oneWholePiece(`${dir}/missing`, 2 * BLOCK);
      workers.begin(missing);
      const err = await assertRejectsCode(workers.examine(1, [wholeOfMissing]), "IO");
      assert.match(err.message, /open source image .*missing/);
      workers.end();
      const [setup, plan] = oneWholePiece(short, 2 * BLOCK);
      workers.begin(setup);
      const shrunk = await assertRejectsCode(workers.examine(0, [plan]), "IO");
      assert.match(
        shrunk.message,
        new RegExp(`source image ended at byte ${BLOCK} while scanning`),
      );
      // The worker is still good for the next piece: this one ends where the file does.
      const fits = {
        ...plan,
        count: 1,
        length: BLOCK,
        extents: [{ at: 0, length: BLOCK, data: true }],
      };
      const [examined] = await workers.examine(0, [{ ...fits, manifest: new Uint8Array(48) }]);
      assert.deepStrictEqual(examined.dirty, [0]);
      assert.equal(examined.bytesRead, BLOCK);
      workers.end();
      assert.equal(workers.failed, false);
      // Outside a pass a worker has no image.
      await assertRejectsCode(workers.examine(1, [fits]), "INVALID_ARGUMENT");
    } finally {
      workers.close();
    }
    assert.equal(workers.failed, true);
  });
});

Deno.test("a scan worker that dies fails its pieces with WORKER_FAILED instead of hanging", async () => {
  const dying = new URL(
    `data:application/javascript,self.onmessage = () => { throw new Error("boom"); };`,
  );
  const [setup, plan] = oneWholePiece("/dev/null", BLOCK);
  const workers = new ScanWorkers(2, dying);
  try {
    const examined = workers.examine(0, [plan]);
    workers.begin(setup);
    const err = await assertRejectsCode(examined, "WORKER_FAILED");
    assert.match(err.message, /boom/);
    assert.equal(workers.failed, true);
    await assertRejectsCode(workers.examine(2, [plan]), "WORKER_FAILED");
  } finally {
    workers.close();
  }
});

seededTest(
  "a read error on a scan worker ends the pass with that error, not a hang",
  async (prng) => {
    await inTempDir(async (dir) => {
      // The pass plans from a full image while its workers read one that ends after a piece.
      const blocks = 4 * PIECE_BLOCKS;
      const data = prng.fill(new Uint8Array(blocks * BLOCK));
      await Deno.writeFile(`${dir}/image`, data);
      await Deno.writeFile(`${dir}/short`, data.subarray(0, SCAN_READ_BYTES));
      const identity = newVolumeIdentity("workers", data.length, BLOCK);
      const manifest = await ManifestFile.open(fs, `${dir}/manifest`, blocks, { create: true });
      await manifest.write(0, blockEntries(data, BLOCK));
      const image = await fs.open(`${dir}/image`);
      using dirty = new Bitmap(blocks);
      const pool = new ScanWorkers(2);
      try {
        const err = await assertRejectsCode(
          scanPass({
            images: [image],
            identity,
            manifest,
            limiter: new RateLimiter(0, SCAN_READ_BYTES, performance.now()),
            workers: { pool, path: `${dir}/short` },
            prefilter: null,
            startBlock: 0,
            dirty,
          }),
          "IO",
        );
        assert.match(err.message, new RegExp(`ended at byte ${SCAN_READ_BYTES} while scanning`));
        // The workers ended that pass and are ready for the next.
        assert.equal(pool.failed, false);
      } finally {
        pool.close();
        image.close();
        manifest.close();
      }
    });
  },
);
