import assert from "node:assert/strict";
import type { PresyncError } from "../../agent/errors.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { pollUntil } from "../../fixtures/nbd_tools.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import {
  BLOCK,
  cutRuns,
  IMAGE,
  readBlock,
  syncedVolume,
  trackerOf,
  truth,
  watched,
  writeImage,
} from "./_test_volume.ts";
import { SCAN_READ_BYTES } from "./_scan_pass.ts";

/** A promise and its resolver. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => open = resolve);
  return { opened, open };
}

seededTest(
  "a block written after the background pass read it is caught by the cut, which hashes only it",
  async (prng) => {
    const volume = await syncedVolume(prng, 200);
    const target = 37;
    const early = 150;
    let phase: "cut" | "background" = "cut";
    let injected = false;
    const later = gate();
    // The guest writes block 37 right after the first background pass has read it; later
    // passes wait until the test cuts.
    const fs = watched(volume.fs, async () => {
      if (phase === "cut") return;
      if (injected) return await later.opened;
      injected = true;
      await writeImage(volume.fs, target * BLOCK, prng.fill(new Uint8Array(BLOCK)));
    });
    const errors: PresyncError[] = [];
    const tracker = trackerOf(volume, {
      fs,
      background: { intervalMs: 5, onError: (err) => errors.push(err) },
    });
    assert.deepStrictEqual(await cutRuns(tracker), []);
    // Written before the background pass: that pass hashes it, the cut need not.
    const old = await readBlock(volume.fs, early);
    await writeImage(volume.fs, early * BLOCK, old.map((b) => b ^ 1));
    phase = "background";
    await pollUntil("a background pass", () => tracker.lastScan!.kind === "background");
    assert.ok(injected);
    assert.equal(tracker.lastScan!.blocksHashed, 1);
    assert.equal(tracker.lastScan!.dirtyBlocks, 1, "the pass read block 37 before its write");
    phase = "cut";
    later.open();
    assert.deepStrictEqual(await cutRuns(tracker), [[target, 1], [early, 1]]);
    assert.deepStrictEqual(await truth(volume), [[target, 1], [early, 1]]);
    assert.equal(tracker.lastScan!.kind, "cut");
    assert.equal(tracker.lastScan!.blocksHashed, 1);
    assert.deepStrictEqual(errors, []);
    await tracker.close();
  },
);

seededTest("a failed background pass is reported and the next one still runs", async (prng) => {
  const volume = await syncedVolume(prng, 50);
  const errors: PresyncError[] = [];
  const tracker = trackerOf(volume, {
    background: { intervalMs: 5, onError: (err) => errors.push(err) },
  });
  const image = await volume.fs.open(IMAGE, { write: true });
  await image.truncate(49 * BLOCK);
  await pollUntil("two failed passes", () => errors.length >= 2);
  assert.equal(errors[0].code, "VOLUME_MISMATCH");
  await image.truncate(50 * BLOCK);
  image.close();
  await pollUntil("a pass after the repair", () => tracker.lastScan?.kind === "background");
  // Closing stops the schedule (the test's sanitizers fail on a timer or read left behind).
  await tracker.close();
});

seededTest(
  "interrupt() while a cut waits for a background pass ends both, and later cuts at once",
  async (prng) => {
    const blocks = 4096; // 16 MiB: eight 2 MiB reads
    const volume = await syncedVolume(prng, blocks);
    let phase: "cut" | "background" = "cut";
    let reads = 0;
    const stuck = gate();
    // The background pass's first read hangs (a slow disk) until the test lets it go.
    const fs = watched(volume.fs, async () => {
      reads++;
      if (phase === "background") await stuck.opened;
    });
    const errors: PresyncError[] = [];
    const tracker = trackerOf(volume, {
      fs,
      background: { intervalMs: 5, onError: (err) => errors.push(err) },
    });
    assert.deepStrictEqual(await cutRuns(tracker), []);
    phase = "background";
    const before = reads;
    await pollUntil("a background read", () => reads > before);
    // The cut is stopping the background pass when the agent stops.
    const cutting = tracker.cut();
    cutting.catch(() => {});
    tracker.interrupt();
    const atInterrupt = reads;
    stuck.open();
    await assertRejectsCode(cutting, "SESSION_CLOSED");
    await assertRejectsCode(tracker.cut(), "SESSION_CLOSED");
    // Only the reads already queued finished: neither pass went on through the image.
    assert.ok(reads - atInterrupt < blocks * BLOCK / SCAN_READ_BYTES, `${reads - atInterrupt}`);
    assert.equal(tracker.lastScan!.kind, "cut");
    assert.deepStrictEqual(errors, []);
    await tracker.close();
  },
);
