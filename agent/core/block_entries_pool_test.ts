import assert from "node:assert/strict";
import { seededTest } from "../../fixtures/seeded.ts";
import { BlockEntriesPool } from "./block_entries_pool.ts";
import { blockEntries } from "./mod.ts";

seededTest("the worker pool gives the same entries as blockEntries, pieces in any order", async (
  prng,
) => {
  using pool = new BlockEntriesPool(2);
  const pieces = Array.from({ length: 12 }, () => {
    const data = new Uint8Array(64 * 1024 * (1 + prng.int(8)));
    if (prng.int(3) > 0) prng.fill(data.subarray(0, prng.int(data.length)));
    return data;
  });
  const expected = pieces.map((p) => blockEntries(p, 4096));
  const results = await Promise.all(
    pieces.map((p) => pool.compute(p.slice().buffer, p.length, 4096)),
  );
  results.forEach((r, i) => {
    assert.deepStrictEqual(r.entries, expected[i], `piece ${i}`);
    assert.equal(r.buffer.byteLength, pieces[i].length);
  });
});
