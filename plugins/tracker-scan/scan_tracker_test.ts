import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import {
  cutRuns,
  nonZero,
  scribble,
  syncedVolume,
  trackerOf,
  truth,
  watched,
} from "./_test_volume.ts";

seededTest(
  "with the pre-filter a cut finds what a full BLAKE3 scan finds, hashing only blocks written since",
  async (prng) => {
    const blocks = 700;
    const volume = await syncedVolume(prng, blocks, 1000);
    const tracker = trackerOf(volume);
    const plain = trackerOf(volume, { prefilter: undefined });
    // The first scan has no table yet: every non-zero block is hashed to build it.
    assert.deepStrictEqual(await cutRuns(tracker), []);
    assert.equal(tracker.lastScan!.prefiltered, false);
    assert.equal(tracker.lastScan!.blocksHashed, await nonZero(volume, Array(blocks).keys()));
    const changed = await scribble(prng, volume, blocks);
    const expected = await truth(volume);
    assert.ok(expected.length > 0);
    assert.deepStrictEqual(await cutRuns(tracker), expected);
    assert.deepStrictEqual(await cutRuns(plain), expected);
    const scan = tracker.lastScan!;
    assert.equal(scan.prefiltered, true);
    assert.equal(scan.blocksHashed, await nonZero(volume, changed));
    assert.equal(scan.bytesRead, volume.identity.sizeBytes);
    assert.equal(scan.dirtyBlocks, expected.reduce((n, [, length]) => n + length, 0));
    // Nothing written since: the next cut hashes nothing and finds the same blocks.
    assert.deepStrictEqual(await cutRuns(tracker), expected);
    assert.equal(tracker.lastScan!.blocksHashed, 0);
    await tracker.close();
    await plain.close();
  },
);

for (const prefilter of [true, false]) {
  seededTest(
    `a scan killed halfway resumes from its checkpoint and finds the same blocks (pre-filter: ${prefilter})`,
    async (prng) => {
      const volume = await syncedVolume(prng, 6000);
      const options = prefilter ? {} : { prefilter: undefined };
      await cutRuns(trackerOf(volume, options));
      await scribble(prng, volume, 6000);
      const expected = await truth(volume);
      // Checkpoints every 4 MiB; the "process" dies on the 7th of its 2 MiB reads (of 12).
      let reads = 0;
      const dying = watched(volume.fs, () => {
        if (++reads === 7) throw new Error("killed");
      });
      const checkpoint = {
        checkpointPath: "/s/scan.checkpoint",
        checkpointEveryBytes: 4 * 1024 * 1024,
        ...options,
      };
      await assert.rejects(cutRuns(trackerOf(volume, { ...checkpoint, fs: dying })), /killed/);
      assert.ok(await volume.fs.exists("/s/scan.checkpoint"));
      let resumedBytes = 0;
      const counting = watched(volume.fs, (_, bytes) => {
        resumedBytes += bytes;
      });
      const resumed = trackerOf(volume, { ...checkpoint, fs: counting });
      assert.deepStrictEqual(await cutRuns(resumed), expected);
      assert.ok(
        resumedBytes < volume.identity.sizeBytes,
        `resumed scan read ${resumedBytes} bytes`,
      );
      assert.equal(await volume.fs.exists("/s/scan.checkpoint"), false);
      // The resumed scan trusted the table the killed one flushed at its checkpoint.
      assert.equal(resumed.lastScan!.prefiltered, prefilter);
    },
  );
}

seededTest(
  "interrupt() ends a cut scan in progress with SESSION_CLOSED; a later cut finds the same blocks",
  async (
    prng,
  ) => {
    const blocks = 4096; // 16 MiB: eight 2 MiB reads, the abort is seen between them
    const volume = await syncedVolume(prng, blocks);
    await scribble(prng, volume, blocks);
    const expected = await truth(volume);
    // Read-rate bound so the scan takes seconds: the interrupt lands inside it.
    const slow = trackerOf(volume, {
      prefilter: undefined,
      readRateBytesPerSecond: volume.identity.sizeBytes / 8,
    });
    const cutting = slow.cut();
    await new Promise((resolve) => setTimeout(resolve, 100));
    slow.interrupt();
    await assertRejectsCode(cutting, "SESSION_CLOSED");
    await slow.close();
    const plain = trackerOf(volume, { prefilter: undefined });
    assert.deepStrictEqual(await cutRuns(plain), expected);
    await plain.close();
  },
);
