import assert from "node:assert/strict";
import { Bitmap } from "../core/mod.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { countFresh } from "./fresh_blocks.ts";

/**
 * A seeded hot-set workload over `blocks` blocks: a generation in flight (a hot set and a cold
 * tail), part of it acknowledged, and the writes since its cut (mostly the hot set again, some
 * anywhere), as sets of block numbers: the ground truth.
 */
function workload(prng: Prng, blocks: number) {
  const hotStart = prng.int(blocks >> 1);
  const hotLength = 1 + prng.int(blocks >> 3);
  const generation = new Set<number>();
  for (let b = hotStart; b < hotStart + hotLength; b++) generation.add(b);
  for (let i = prng.int(blocks >> 2); i > 0; i--) generation.add(prng.int(blocks));
  const acked = new Set([...generation].filter(() => prng.int(3) === 0));
  const written = new Set<number>();
  for (let i = prng.int(2 * hotLength); i > 0; i--) written.add(hotStart + prng.int(hotLength));
  for (let i = prng.int(blocks >> 4); i > 0; i--) written.add(prng.int(blocks));
  return { generation, acked, written };
}

function bitmap(size: number, blocks: Set<number>): Bitmap {
  const map = new Bitmap(size);
  for (const b of blocks) map.set(b);
  return map;
}

const noRate = { freshBlocks: null, blocksPerSecond: null };

seededTest(
  "fresh blocks, exact tracker: what a fold sends is the union, a block in both counted once",
  (prng) => {
    for (let i = 0; i < 100; i++) {
      const size = 64 + prng.int(20_000);
      const { generation, acked, written } = workload(prng, size);
      using dirty = bitmap(size, generation);
      using ackedMap = bitmap(size, acked);
      using live = bitmap(size, written);
      const fresh = countFresh(
        {
          blocks: live,
          asOfMs: 1000,
          exact: true,
          newBlocksPerSecond: 0,
          rewritesPerSecond: 0,
          lastCutOutside: 0,
        },
        { dirty, acked: ackedMap },
        1000,
        { freshBlocks: 5, blocksPerSecond: 1 },
      );
      assert.equal(fresh.source, "tracker", "the tracker's set wins over the write rate");
      assert.equal(fresh.blocks, written.size);
      assert.equal(fresh.estimatedBlocks, 0);
      const unacked = [...generation].filter((b) => !acked.has(b));
      const union = new Set([...unacked, ...written]);
      assert.equal(
        unacked.length + fresh.blocks - fresh.unackedOverlap,
        union.size,
        `case ${i}: unacknowledged ∪ written`,
      );
      const committed = new Set([...generation, ...written]);
      assert.equal(
        generation.size + fresh.blocks - fresh.generationOverlap,
        committed.size,
        `case ${i}: the folded generation`,
      );
    }
  },
);

seededTest(
  "fresh blocks, scan: the pass's set, plus new blocks and rewrites at the passes' rates since",
  (prng) => {
    for (let i = 0; i < 100; i++) {
      const size = 64 + prng.int(20_000);
      const { generation, acked, written } = workload(prng, size);
      using dirty = bitmap(size, generation);
      using ackedMap = bitmap(size, acked);
      using found = bitmap(size, written);
      const rate = prng.int(50);
      const rewritesPerSecond = prng.int(100) / 1000;
      const ageMs = prng.int(20_000);
      const fresh = countFresh(
        {
          blocks: found,
          asOfMs: 5000,
          exact: false,
          newBlocksPerSecond: rate,
          rewritesPerSecond,
          lastCutOutside: 7,
        },
        { dirty, acked: ackedMap },
        5000 + ageMs,
        { freshBlocks: 12_345, blocksPerSecond: 999 },
      );
      assert.equal(fresh.source, "scan");
      assert.equal(fresh.asOfSeconds, ageMs / 1000);
      const outside = size - new Set([...generation, ...written]).size;
      const sent = [...acked].filter((b) => !written.has(b)).length;
      const expected = Math.min(outside, Math.round(rate * ageMs / 1000)) +
        Math.round(sent * (1 - Math.exp(-rewritesPerSecond * ageMs / 1000)));
      assert.equal(fresh.estimatedBlocks, expected, `case ${i}: new outside both sets, rewrites`);
      assert.ok(expected <= outside + sent, `case ${i}: never more than can be written`);
      assert.equal(fresh.blocks, written.size + expected);
      const unacked = [...generation].filter((b) => !acked.has(b));
      const union = new Set([...unacked, ...written]);
      assert.equal(
        unacked.length + fresh.blocks - fresh.unackedOverlap,
        union.size + expected,
        `case ${i}: the known union once, plus the estimate`,
      );
      const slow = countFresh(
        {
          blocks: found,
          asOfMs: 5000,
          exact: false,
          newBlocksPerSecond: null,
          rewritesPerSecond,
          lastCutOutside: 0,
        },
        null,
        5000 + ageMs,
        { freshBlocks: 12_345, blocksPerSecond: rate },
      );
      assert.equal(slow.source, "scan_write_rate", "no rate from the passes: the write rate");
      assert.equal(
        slow.estimatedBlocks,
        Math.min(size - written.size, Math.round(rate * ageMs / 1000)),
      );
      const none = countFresh(
        {
          blocks: found,
          asOfMs: 5000,
          exact: false,
          newBlocksPerSecond: null,
          rewritesPerSecond,
          lastCutOutside: 0,
        },
        null,
        5000 + ageMs,
        noRate,
      );
      assert.equal(none.source, "unknown", "writes since the pass cannot be estimated");
    }
  },
);

seededTest(
  "fresh blocks, scan with nothing in flight: the committed last cut's blocks may be rewritten",
  (prng) => {
    for (let i = 0; i < 50; i++) {
      const size = 64 + prng.int(20_000);
      const { generation, written } = workload(prng, size);
      using found = bitmap(size, written);
      const lastCutOutside = [...generation].filter((b) => !written.has(b)).length;
      const rate = prng.int(50);
      const rewritesPerSecond = prng.int(100) / 1000;
      const seconds = prng.int(20_000) / 1000;
      const fresh = countFresh(
        {
          blocks: found,
          asOfMs: 0,
          exact: false,
          newBlocksPerSecond: rate,
          rewritesPerSecond,
          lastCutOutside,
        },
        null,
        seconds * 1000,
        noRate,
      );
      const outside = size - written.size - lastCutOutside;
      const expected = Math.min(outside, Math.round(rate * seconds)) +
        Math.round(lastCutOutside * (1 - Math.exp(-rewritesPerSecond * seconds)));
      assert.equal(fresh.source, "scan");
      assert.equal(fresh.estimatedBlocks, expected, `case ${i}`);
      assert.equal(fresh.unackedOverlap, 0, "nothing in flight: nothing counted once for it");
    }
  },
);

Deno.test("fresh blocks: without the tracker's set, the write-rate estimate or unknown", () => {
  const estimated = countFresh(null, null, 0, { freshBlocks: 40, blocksPerSecond: 2 });
  assert.equal(estimated.source, "write_rate");
  assert.equal(estimated.blocks, 40);
  assert.equal(estimated.unackedOverlap, 0, "no set: no overlap known");
  assert.equal(estimated.asOfSeconds, null);
  const unknown = countFresh(null, null, 0, noRate);
  assert.equal(unknown.source, "unknown");
  assert.equal(unknown.blocks, 0);
});
