import assert from "node:assert/strict";
import { Bitmap } from "../core/mod.ts";
import type { Cut } from "../tracker.ts";
import { CutAhead } from "./cut_ahead.ts";

/** A cut over `dirty` whose reads return the first block number in every byte. */
function fakeCut(dirty: Bitmap): Cut & { releases: number } {
  const cut = {
    dirty,
    pointInTime: false,
    releases: 0,
    read: (first: number, count: number) => Promise.resolve(new Uint8Array(count).fill(first)),
    release: () => {
      cut.releases++;
      dirty.free();
      return Promise.resolve();
    },
  };
  return cut;
}

Deno.test("cut ahead: blocks prepared while the cut is taken are dirty in it, besides what the tracker found", async () => {
  let finish!: () => void;
  const inner = fakeCut(new Bitmap(100).set(3));
  const ahead = new CutAhead(100, async () => {
    await new Promise<void>((resolve) => finish = resolve);
    return { cut: inner, cutTimeMs: 42 };
  });
  ahead.prepared(10, 5);
  await Promise.resolve();
  assert.equal(ahead.settled, false);
  ahead.prepared(50, 1);
  finish();
  await ahead.settle();
  assert.equal(ahead.settled, true);
  const { cut, cutTimeMs } = await ahead.take();
  assert.equal(cutTimeMs, 42);
  assert.equal(ahead.preparedCount, 6);
  assert.deepEqual([...cut.dirty.extents()], [[3, 1], [10, 5], [50, 1]]);
  assert.equal(inner.dirty.popcount(), 1, "the tracker's own set is left as it was");
  assert.deepEqual(await cut.read(7, 2), new Uint8Array(2).fill(7), "reads go to the cut");
  ahead.prepared(70, 1); // after the take: ignored
  await cut.release();
  await cut.release();
  assert.equal(inner.releases, 1, "released once");
  await assert.rejects(ahead.take(), /taken already/);
});

Deno.test("cut ahead: a cut that failed settles, and take throws its error", async () => {
  const ahead = new CutAhead(10, () => Promise.reject(new Error("image resized")));
  ahead.prepared(0, 2);
  await ahead.settle();
  assert.equal(ahead.settled, true);
  await assert.rejects(ahead.take(), /image resized/);
  ahead.prepared(1, 1); // the bitmap is freed: ignored
});
