import assert from "node:assert/strict";
import { blockEntries } from "../../agent/core/mod.ts";
import { craftCollision, referenceExpand } from "../../fixtures/prefilter_reference.ts";
import { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { TABLE_ENTRY_BYTES, TABLE_HEADER_BYTES } from "./prefilter_table.ts";
import {
  BLOCK,
  cutRuns,
  nonZero,
  readBlock,
  scribble,
  syncedVolume,
  syncImage,
  TABLE,
  type TestVolume,
  trackerOf,
  truth,
  writeImage,
} from "./_test_volume.ts";

seededTest(
  "a block rewritten to collide under a known key is missed with that key and caught with the secret",
  async (prng) => {
    const volume = await syncedVolume(prng, 64);
    const known = new Uint8Array(32);
    const [before, after] = craftCollision(prng, referenceExpand(known, BLOCK), BLOCK);
    await writeImage(volume.fs, 5 * BLOCK, before);
    await volume.manifest.write(5, blockEntries(before, BLOCK));
    const exposed = trackerOf(volume, { prefilter: { tablePath: "/s/known", secret: known } });
    const guarded = trackerOf(volume);
    assert.deepStrictEqual(await cutRuns(exposed), []);
    assert.deepStrictEqual(await cutRuns(guarded), []);
    // The guest rewrites block 5 to bytes whose value under the known key is the same.
    await writeImage(volume.fs, 5 * BLOCK, after);
    assert.deepStrictEqual(await truth(volume), [[5, 1]]);
    assert.deepStrictEqual(await cutRuns(exposed), [], "the attack works on a known key");
    assert.deepStrictEqual(await cutRuns(guarded), [[5, 1]]);
    assert.equal(guarded.lastScan!.blocksHashed, 1);
    await exposed.close();
    await guarded.close();
  },
);

/** Ways a table can be unusable, applied after a first cut built it. */
const damages: [string, (volume: TestVolume) => Promise<Partial<TestVolume>>][] = [
  ["missing", async (v) => {
    await v.fs.remove(TABLE);
    return {};
  }],
  ["torn by a crash during a flush (state: updating)", (v) => patch(v, 8, [2])],
  ["with a damaged magic", (v) => patch(v, 0, [0x51])],
  ["of another volume (uuid)", (v) => patch(v, 24, [0xff, 0xfe])],
  ["of another block size", (v) => patch(v, 12, [0, 0x20])],
  ["cut short", async (v) => {
    const file = await v.fs.open(TABLE, { write: true });
    await file.truncate(TABLE_HEADER_BYTES + 10 * TABLE_ENTRY_BYTES);
    file.close();
    return {};
  }],
  ["made under another key", (v) => Promise.resolve({ secret: v.secret.map((b) => b ^ 1) })],
];

async function patch(volume: TestVolume, offset: number, bytes: number[]) {
  const file = await volume.fs.open(TABLE, { write: true });
  await file.write(offset, new Uint8Array(bytes));
  file.close();
  return {};
}

for (const [what, damage] of damages) {
  seededTest(`a table ${what} costs one full BLAKE3 scan and never a missed block`, async (
    prng,
  ) => {
    const volume = await syncedVolume(prng, 300, 5);
    await cutRuns(trackerOf(volume));
    await scribble(prng, volume, 300);
    const damaged = { ...volume, ...(await damage(volume)) };
    const tracker = trackerOf(damaged);
    assert.deepStrictEqual(await cutRuns(tracker), await truth(volume));
    assert.equal(tracker.lastScan!.prefiltered, false);
    assert.equal(tracker.lastScan!.blocksHashed, await nonZero(volume, Array(300).keys()));
    // Rebuilt by that scan: the next one trusts it again.
    assert.deepStrictEqual(await cutRuns(tracker), await truth(volume));
    assert.equal(tracker.lastScan!.prefiltered, true);
    assert.equal(tracker.lastScan!.blocksHashed, 0);
    await tracker.close();
  });
}

seededTest("a damaged table entry costs a re-hash, never a missed block", async (prng) => {
  const volume = await syncedVolume(prng, 100);
  await cutRuns(trackerOf(volume));
  // Block 7 changes; its entry's pre-filter half is damaged too.
  const block = await readBlock(volume.fs, 7);
  await writeImage(volume.fs, 7 * BLOCK, block.map((b) => b ^ 0x80));
  const file = await volume.fs.open(TABLE, { write: true });
  await file.write(TABLE_HEADER_BYTES + 7 * TABLE_ENTRY_BYTES + 3, new Uint8Array([0x42]));
  file.close();
  const tracker = trackerOf(volume);
  assert.deepStrictEqual(await cutRuns(tracker), [[7, 1]]);
  assert.equal(tracker.lastScan!.blocksHashed, 1);
  await tracker.close();
});

seededTest("a power cut at any instant of a cut leaves a table that is right or discarded", async (
  prng,
) => {
  const seed = prng.nextU32();
  const outcomes = new Set<boolean>();
  for (let crashAt = 0;; crashAt++) {
    const scenario = new Prng(seed);
    const volume = await syncedVolume(scenario, 300);
    await cutRuns(trackerOf(volume));
    await scribble(scenario, volume, 300);
    await syncImage(volume.fs);
    volume.fs.crashAfter(crashAt);
    let crashed = false;
    try {
      await cutRuns(trackerOf(volume));
    } catch (err) {
      if (!volume.fs.crashed) throw err;
      crashed = true;
    }
    volume.fs.powerCut();
    const restarted = trackerOf(volume);
    assert.deepStrictEqual(await cutRuns(restarted), await truth(volume), `crash at ${crashAt}`);
    outcomes.add(restarted.lastScan!.prefiltered);
    await restarted.close();
    if (!crashed) break;
  }
  // Some crash points left the old consistent table, some a torn one that was discarded.
  assert.deepStrictEqual([...outcomes].sort(), [false, true]);
});
