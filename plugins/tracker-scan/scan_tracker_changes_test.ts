import assert from "node:assert/strict";
import { Bitmap, blockEntries } from "../../agent/core/mod.ts";
import type { PresyncError } from "../../agent/errors.ts";
import { pollUntil } from "../../fixtures/nbd_tools.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import {
  BLOCK,
  readBlock,
  syncedVolume,
  trackerOf,
  truth,
  watched,
  writeImage,
} from "./_test_volume.ts";

/** 16 MiB: eight reads of 2 MiB; the test writes only in the second half. */
const BLOCKS = 4096;
const FIRST_WRITTEN = BLOCKS / 2;

/** A promise and its resolver. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => open = resolve);
  return { opened, open };
}

/** The block numbers of `runs`. */
function blocksOf(runs: Iterable<[number, number]>): number[] {
  return [...runs].flatMap(([start, length]) => Array.from({ length }, (_, i) => start + i));
}

seededTest(
  "changesNow: a background pass's changed blocks besides the unsent ones in flight, and the rate of new ones",
  async (prng) => {
    const volume = await syncedVolume(prng, BLOCKS);
    const readRate = 64 * 1024 * 1024;
    let unsent: Set<number> | null = null;
    let generation: number[] = [];
    // Background passes wait after their reads while the test writes (a pass in progress may
    // have read the first half only): so one pass sees all the writes.
    let held = false;
    const release = gate();
    const fs = watched(volume.fs, async () => {
      if (held) await release.opened;
    });
    const errors: PresyncError[] = [];
    const tracker = trackerOf(volume, {
      fs,
      background: { intervalMs: 5, onError: (err) => errors.push(err) },
      readRateBytesPerSecond: readRate,
      inFlight: () => {
        if (!unsent) return null;
        const dirty = new Bitmap(BLOCKS);
        const acked = new Bitmap(BLOCKS);
        for (const b of generation) {
          dirty.set(b);
          if (!unsent.has(b)) acked.set(b);
        }
        return { dirty, acked };
      },
    });
    try {
      assert.equal(tracker.changesNow(), null, "no pass yet: nothing known");
      // A hot set and a cold tail, cut as the generation in flight.
      const hot = Array.from({ length: 40 }, (_, i) => 3000 + i);
      const flip = async (block: number) => {
        const bytes = await readBlock(volume.fs, block);
        await writeImage(volume.fs, block * BLOCK, bytes.map((b) => b ^ (1 + prng.int(255))));
      };
      for (const b of hot) await flip(b);
      for (let i = 0; i < 10; i++) await flip(3500 + prng.int(500));
      const cut = await tracker.cut();
      held = true;
      generation = blocksOf(cut.dirty.extents());
      // About half of it sent (the manifest takes what was sent), the rest unsent: set before
      // the next background pass starts (it asks at its start).
      unsent = new Set(generation.filter(() => prng.int(2) === 0));
      await cut.release();
      const afterCut = tracker.changesNow()!;
      assert.deepEqual(blocksOf(afterCut.blocks.extents()), [], "a cut's own finds are its own");
      afterCut.blocks.free();
      for (const b of generation) {
        if (unsent.has(b)) continue;
        await volume.manifest.write(b, blockEntries(await readBlock(volume.fs, b), BLOCK));
      }
      // The hot set written again (sent blocks, at least one, and unsent ones), and new cold
      // blocks.
      await flip(hot.find((b) => !unsent!.has(b))!);
      for (const b of hot) if (prng.int(2) === 0) await flip(b);
      for (let i = 0; i < 15; i++) await flip(FIRST_WRITTEN + prng.int(400));
      const writtenAt = Date.now();
      held = false;
      release.open();
      await pollUntil(
        "a background pass after the writes",
        () => (tracker.lastScan?.kind === "background" && tracker.lastScan.endedAtMs >= writtenAt),
      );
      const changes = tracker.changesNow()!;
      // Compared with the manifest, less what was still unsent when the pass started.
      const expected = blocksOf(await truth(volume)).filter((b) => !unsent!.has(b));
      try {
        assert.equal(changes.exact, false);
        assert.deepEqual(blocksOf(changes.blocks.extents()), expected);
        assert.equal(changes.asOfMs, tracker.lastScan!.startedAtMs, "as of the pass's start");
        assert.ok(
          changes.newBlocksPerSecond !== null && changes.newBlocksPerSecond > 0,
          `new blocks found since the cut: ${changes.newBlocksPerSecond}/s`,
        );
        assert.ok(
          changes.rewritesPerSecond !== null && changes.rewritesPerSecond > 0,
          `sent blocks found rewritten: ${changes.rewritesPerSecond}/s`,
        );
        const notFound = generation.filter((b) => !expected.includes(b)).length;
        assert.equal(changes.lastCutOutside, notFound, "the last cut's blocks not found again");
        // What a fold sends: the unsent blocks ∪ the changed ones, each once.
        const union = new Set([...unsent, ...expected]);
        using all = changes.blocks.clone();
        for (const b of unsent) all.set(b);
        assert.equal(all.popcount(), union.size);
      } finally {
        changes.blocks.free();
      }
      // No writes since: the next pass finds the same set and no new blocks.
      const quietAt = Date.now();
      await pollUntil(
        "a pass without writes",
        () => (tracker.lastScan?.kind === "background" && tracker.lastScan.startedAtMs > quietAt),
      );
      const quiet = tracker.changesNow()!;
      try {
        assert.deepEqual(blocksOf(quiet.blocks.extents()), expected);
        assert.equal(quiet.newBlocksPerSecond, 0);
        assert.equal(quiet.rewritesPerSecond, 0);
      } finally {
        quiet.blocks.free();
      }
      // The scan term: from the passes' speed, never under what the read-rate cap allows.
      const estimate = tracker.cutSecondsEstimate();
      assert.ok(estimate !== null);
      assert.ok(estimate >= tracker.lastScan!.bytesRead / readRate - 1e-9, `${estimate} s`);
      assert.deepEqual(errors, []);
    } finally {
      await tracker.close();
    }
    assert.equal(tracker.changesNow(), null, "closed: nothing known");
  },
);

seededTest(
  "changesNow between cuts: each cut measures new blocks and rewrites of the last generation",
  async (prng) => {
    const volume = await syncedVolume(prng, 256);
    const tracker = trackerOf(volume);
    const flip = async (block: number) => {
      const bytes = await readBlock(volume.fs, block);
      await writeImage(volume.fs, block * BLOCK, bytes.map((b) => b ^ (1 + prng.int(255))));
    };
    const sendAll = async (blocks: number[]) => {
      for (const b of blocks) {
        await volume.manifest.write(b, blockEntries(await readBlock(volume.fs, b), BLOCK));
      }
    };
    try {
      await (await tracker.cut()).release();
      const first = Array.from({ length: 20 }, (_, i) => 10 + i);
      for (const b of first) await flip(b);
      const cut = await tracker.cut();
      assert.deepEqual(blocksOf(cut.dirty.extents()), first);
      await cut.release();
      await sendAll(first);
      const afterNew = tracker.changesNow()!;
      afterNew.blocks.free();
      assert.ok(afterNew.newBlocksPerSecond! > 0, "new blocks outside the last generation");
      assert.equal(afterNew.rewritesPerSecond, 0);
      assert.equal(afterNew.lastCutOutside, first.length, "nothing found since that cut yet");
      // Half of that generation rewritten, nothing else.
      for (const b of first.slice(0, 10)) await flip(b);
      await (await tracker.cut()).release();
      const afterRewrites = tracker.changesNow()!;
      afterRewrites.blocks.free();
      assert.equal(afterRewrites.newBlocksPerSecond, 0);
      assert.ok(afterRewrites.rewritesPerSecond! > 0, "the last generation's blocks rewritten");
    } finally {
      await tracker.close();
    }
  },
);

seededTest(
  "cutSecondsEstimate: the quicker of the cut passes' and the background passes' speeds",
  async (prng) => {
    const volume = await syncedVolume(prng, BLOCKS);
    // Background passes here are slowed (as when they share the CPU with a send), cuts are not
    // (the final cut runs with the VM paused and nothing else in flight).
    let slow = false;
    const fs = watched(volume.fs, async () => {
      if (slow) await new Promise((resolve) => setTimeout(resolve, 40));
    });
    const errors: PresyncError[] = [];
    const tracker = trackerOf(volume, {
      fs,
      workers: 0,
      background: { intervalMs: 5, onError: (err) => errors.push(err) },
    });
    const gib = tracker.sizeBytes / 2 ** 30;
    const perGiB = (cost: { seconds: number; throttledSeconds: number }) =>
      (cost.seconds - cost.throttledSeconds) / gib;
    try {
      await (await tracker.cut()).release();
      const cut = tracker.lastScan!;
      assert.equal(cut.kind, "cut");
      assert.ok(
        Math.abs(tracker.cutSecondsEstimate()! - perGiB(cut) * gib) < 1e-9,
        "a cut alone: its speed",
      );
      slow = true;
      await pollUntil("a slowed background pass", () => tracker.lastScan?.kind === "background");
      const background = tracker.lastScan!;
      assert.ok(
        perGiB(background) > perGiB(cut),
        `background ${background.seconds} s, cut ${cut.seconds} s`,
      );
      const estimate = tracker.cutSecondsEstimate()!;
      assert.ok(
        Math.abs(estimate - perGiB(cut) * gib) < 1e-9,
        `estimate ${estimate} s: the cut's ${cut.seconds} s, not the background's ${background.seconds} s`,
      );
      assert.deepEqual(errors, []);
    } finally {
      await tracker.close();
    }
  },
);
