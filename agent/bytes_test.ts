import assert from "node:assert/strict";
import { assertBytesEqual } from "../fixtures/assert_bytes.ts";
import { concatBytes, joinBytes } from "./bytes.ts";
import { seededTest } from "../fixtures/seeded.ts";

seededTest("joinBytes views adjacent parts of one buffer and copies any other parts", (prng) => {
  const read = prng.fill(new Uint8Array(4096));
  const parts = [read.subarray(0, 1000), read.subarray(1000, 1000), read.subarray(1000, 4000)];
  const joined = joinBytes(parts);
  assert.equal(joined.buffer, read.buffer, "adjacent views are not copied");
  assert.equal(joined.byteOffset, 0);
  assertBytesEqual(joined, read.subarray(0, 4000), "joined parts");

  // A gap, parts out of order, or parts of two buffers: a copy with the same bytes.
  const other = prng.fill(new Uint8Array(100));
  for (
    const split of [
      [read.subarray(0, 10), read.subarray(11, 20)],
      [read.subarray(10, 20), read.subarray(0, 10)],
      [read.subarray(0, 10), other],
    ]
  ) {
    const copy = joinBytes(split);
    assert.notEqual(copy.buffer, read.buffer);
    assert.deepEqual(copy, concatBytes(split));
  }
  assert.equal(joinBytes([]).length, 0);
});
