import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { diffManifests, HASH_BYTES } from "./mod.ts";

function referenceDiff(a: Uint8Array, b: Uint8Array): number[] {
  const count = Math.max(a.length, b.length) / HASH_BYTES;
  const changed: number[] = [];
  for (let i = 0; i < count; i++) {
    const x = a.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
    const y = b.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
    if (x.length !== y.length || x.some((v, k) => v !== y[k])) changed.push(i);
  }
  return changed;
}

seededTest("diffManifests flags exactly the blocks whose hashes differ or exist on one side", (
  prng,
) => {
  for (const count of [0, 1, 7, 64, 65, 1000, 200_000]) {
    const before = prng.fill(new Uint8Array(count * HASH_BYTES));
    const newCount = Math.max(0, count + prng.int(71) - 35);
    const grown = new Uint8Array(newCount * HASH_BYTES);
    grown.set(before.subarray(0, grown.length));
    prng.fill(grown.subarray(Math.min(before.length, grown.length)));
    // Change single bytes at random, including the last byte of a hash.
    for (let k = prng.int(50); k > 0 && grown.length > 0; k--) {
      grown[
        prng.int(grown.length / HASH_BYTES) * HASH_BYTES + [0, 31, prng.int(32)][prng.int(3)]
      ] ^= 1 + prng.int(255);
    }
    using changed = diffManifests(before, grown);
    const expected = referenceDiff(before, grown);
    assert.equal(changed.size, Math.max(before.length, grown.length) / HASH_BYTES);
    assert.deepStrictEqual(
      [...changed.extents()].flatMap(([s, l]) => Array.from({ length: l }, (_, i) => s + i)),
      expected,
      `count ${count}`,
    );
  }
});

Deno.test("diffManifests refuses manifests that are not whole hashes", () => {
  assertThrowsCode(() => diffManifests(new Uint8Array(33), new Uint8Array(32)), "INVALID_ARGUMENT");
});
