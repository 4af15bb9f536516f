import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { Bitmap, blake3 } from "../core/mod.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { ReplicaStore } from "./replica_store.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import type { ReplicaVolume } from "./replica_volume.ts";

const BLOCK = 4096;
const BLOCKS = 48;

/** Block `block`'s bytes in version `version` (1: as the generation was cut, 2: re-written). */
function content(block: number, version: number): Uint8Array {
  const data = new Uint8Array(BLOCK);
  for (let i = 0; i < BLOCK; i += 64) data[i] = (block * 7 + version * 31 + i) & 0xff;
  data[0] = version;
  return data;
}

function randomSet(prng: Prng, percent: number): Bitmap {
  const set = new Bitmap(BLOCKS);
  for (let b = 0; b < BLOCKS; b++) if (prng.int(100) < percent) set.set(b);
  if (set.isEmpty()) set.set(prng.int(BLOCKS));
  return set;
}

function blocksOf(set: Bitmap): number[] {
  return [...set.extents()].flatMap(([s, l]) => Array.from({ length: l }, (_, i) => s + i));
}

async function stageVersion(replica: ReplicaVolume, blocks: number[], version: number) {
  const result = await replica.stage(blocks.map((block) => {
    const data = content(block, version);
    return { block, data, hash: blake3(data) };
  }));
  assert.equal(result.staged, blocks.length);
}

async function predictRoot(replica: ReplicaVolume): Promise<string> {
  const err = await assertRejectsCode(
    replica.commit(replica.meta.committedGeneration + 1, "00".repeat(32)),
    "VERIFY_MISMATCH",
  );
  return /Merkle root ([0-9a-f]{64})/.exec(err.message)![1];
}

const open = (fs: PowerCutFileSystem) =>
  new ReplicaStore(new DirectoryBackend(fs, "/s")).open("db1");

/**
 * One run: generation `generation` cut as `dirty`, `staged` of it staged and flushed, then
 * folded with `redirtied` (the destination crashing after `crashAfter` mutations of the fold
 * and what follows), then resumed as a source resumes and committed. Returns what the fold
 * kept staged when it did not crash.
 */
async function foldRun(
  seeded: boolean,
  dirty: Bitmap,
  staged: Bitmap,
  redirtied: Bitmap,
  crashAfter: number,
): Promise<{ mutations: number; keptStaged: number | null }> {
  const fs = new PowerCutFileSystem();
  await fs.mkdir("/s");
  let replica = await new ReplicaStore(new DirectoryBackend(fs, "/s")).init(
    newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK),
  );
  if (seeded) {
    using first = new Bitmap(BLOCKS).set(0);
    await replica.beginGeneration(1, first, 0);
    await stageVersion(replica, [0], 0);
    await replica.flush();
    await replica.commit(1, await predictRoot(replica));
  }
  const generation = seeded ? 2 : 1;
  await replica.beginGeneration(generation, dirty, 0);
  await stageVersion(replica, blocksOf(staged), 1);
  await replica.flush();
  using all = dirty.clone().or(redirtied);
  const before = fs.mutations;
  fs.crashAfter(crashAfter);
  let keptStaged: number | null = null;
  try {
    await replica.beginGeneration(generation, all, 0, { fold: redirtied });
    const info = replica.resumeInfo();
    keptStaged = info.staged!.received.popcount();
    info.staged!.received.free();
    // The re-dirtied blocks in their newer version, then some of the rest.
    await stageVersion(replica, blocksOf(redirtied), 2);
    await replica.flush();
  } catch (err) {
    if (!fs.crashed) throw err;
  }
  const mutations = fs.mutations - before;
  replica.close();
  fs.powerCut();
  replica = await open(fs);
  try {
    assert.equal(replica.meta.committedGeneration, generation - 1, "the replica stays committed");
    // The source resumes: begin with the fold again, send what is not staged, commit.
    const info = replica.resumeInfo();
    await replica.beginGeneration(generation, all, 0, { fold: redirtied });
    const after = replica.resumeInfo();
    using missing = all.clone();
    if (after.staged) missing.andNot(after.staged.received);
    info.staged?.received.free();
    after.staged?.received.free();
    using missingNew = missing.clone().and(redirtied);
    using missingOld = missing.clone().andNot(redirtied);
    await stageVersion(replica, blocksOf(missingNew), 2);
    await stageVersion(replica, blocksOf(missingOld), 1);
    await replica.flush();
    await replica.commit(generation, await predictRoot(replica));
    for (let b = 0; b < BLOCKS; b++) {
      const expected = redirtied.get(b)
        ? content(b, 2)
        : dirty.get(b)
        ? content(b, 1)
        : seeded && b === 0
        ? content(0, 0)
        : new Uint8Array(BLOCK);
      assertBytesEqual(await replica.readCommitted(b), expected, `block ${b}`);
    }
    assert.ok((await replica.verify()).ok);
  } finally {
    replica.close();
  }
  return { mutations, keptStaged };
}

for (const seeded of [true, false]) {
  seededTest(
    `a fold keeps what was staged, takes re-dirtied blocks in their newer version, and a ` +
      `power cut at any step of it leaves the replica committed (${
        seeded ? "staging log" : "seeding in place"
      })`,
    async (prng) => {
      using dirty = randomSet(prng, 50);
      using staged = dirty.clone().and(randomSet(prng, 70));
      using redirtied = randomSet(prng, 30);
      const clean = await foldRun(seeded, dirty, staged, redirtied, Infinity);
      using kept = staged.clone().andNot(redirtied);
      assert.equal(clean.keptStaged, kept.popcount(), "staged blocks not re-dirtied stay staged");
      for (let crashAfter = 0; crashAfter < clean.mutations; crashAfter++) {
        await foldRun(seeded, dirty, staged, redirtied, crashAfter);
      }
    },
  );
}

Deno.test("a generation folds once; a second fold starts it anew", async () => {
  const fs = new PowerCutFileSystem();
  await fs.mkdir("/s");
  const replica = await new ReplicaStore(new DirectoryBackend(fs, "/s")).init(
    newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK),
  );
  try {
    using dirty = new Bitmap(BLOCKS).set(1).set(2);
    await replica.beginGeneration(1, dirty, 0);
    await stageVersion(replica, [1, 2], 1);
    using fold = new Bitmap(BLOCKS).set(2).set(3);
    using all = dirty.clone().or(fold);
    await replica.beginGeneration(1, all, 0, { fold });
    let info = replica.resumeInfo();
    assert.deepStrictEqual(blocksOf(info.staged!.received), [1]);
    info.staged!.received.free();
    using again = new Bitmap(BLOCKS).set(4);
    using more = all.clone().or(again);
    await replica.beginGeneration(1, more, 0, { fold: again });
    info = replica.resumeInfo();
    assert.equal(info.staged!.received.popcount(), 0, "a second fold is not taken");
    info.staged!.received.free();
  } finally {
    replica.close();
  }
});

for (const seeded of [true, false]) {
  Deno.test(
    `a patch of a re-dirtied block is laid over its copy staged before the fold (${
      seeded ? "staging log" : "seeding in place"
    })`,
    async () => {
      const fs = new PowerCutFileSystem();
      await fs.mkdir("/s");
      const replica = await new ReplicaStore(new DirectoryBackend(fs, "/s")).init(
        newVolumeIdentity("db1", BLOCKS * BLOCK, BLOCK),
      );
      try {
        let generation = 1;
        if (seeded) {
          using first = new Bitmap(BLOCKS).set(0);
          await replica.beginGeneration(1, first, 0);
          await stageVersion(replica, [0], 0);
          await replica.flush();
          await replica.commit(1, await predictRoot(replica));
          generation = 2;
        }
        using dirty = new Bitmap(BLOCKS).set(0).set(5);
        await replica.beginGeneration(generation, dirty, 0);
        await stageVersion(replica, [0, 5], 1);
        await replica.flush();
        using fold = new Bitmap(BLOCKS).set(5).set(9);
        using all = dirty.clone().or(fold);
        await replica.beginGeneration(generation, all, 0, { fold });
        assertBytesEqual(await replica.readPatchBase(5), content(5, 1), "the staged copy");
        assertBytesEqual(await replica.readPatchBase(9), new Uint8Array(BLOCK), "committed");
        assertBytesEqual(
          await replica.readPatchBase(0),
          await replica.readCommitted(0),
          "block 0: its committed copy",
        );
        await stageVersion(replica, [5], 2);
        assertBytesEqual(
          await replica.readPatchBase(5),
          await replica.readCommitted(5),
          "staged again: its committed copy",
        );
      } finally {
        replica.close();
      }
    },
  );
}
