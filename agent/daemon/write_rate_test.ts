import assert from "node:assert/strict";
import { WriteRate } from "./write_rate.ts";

Deno.test("write rate: a cut is due at once after start, then an interval after the last", () => {
  const w = new WriteRate();
  assert.ok(w.dueInMs(3_600_000, 1000) <= 0, "the first cut comes right after start");
  w.recordCut(100, 10_000, true);
  assert.equal(w.dueInMs(3_600_000, 10_000), 3_600_000);
  assert.equal(w.dueInMs(30_000, 40_000), 0);
});

Deno.test("write rate: from the second generation on; fresh blocks capped at the last count", () => {
  const w = new WriteRate();
  w.recordCut(5000, 0, true); // the whole image: not a rate
  assert.equal(w.blocksPerSecond, 0);
  assert.equal(w.freshBlocks(1000), null, "no rate yet: unknown, not zero");
  w.recordCut(200, 10_000, false);
  assert.equal(w.blocksPerSecond, 20);
  assert.equal(w.lastBlocks, 200);
  assert.equal(w.freshBlocks(15_000), 100);
  assert.equal(w.freshBlocks(60_000), 200, "rewrites of a hot set do not add up");
});

Deno.test("write rate: the first cut after a restart is not a rate, unless seeded with the committed cut", () => {
  const w = new WriteRate();
  w.recordCut(300, 50_000, false);
  assert.equal(w.blocksPerSecond, 0);
  assert.equal(w.lastCutMs, 50_000);
  assert.equal(w.freshBlocks(60_000), null);
  const seeded = new WriteRate();
  seeded.seed(20_000);
  seeded.recordCut(300, 50_000, false);
  assert.equal(seeded.blocksPerSecond, 10, "300 blocks since the committed cut 30 s before");
  seeded.seed(0);
  assert.equal(seeded.lastCutMs, 50_000, "a later seed changes nothing");
});
