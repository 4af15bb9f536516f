import assert from "node:assert/strict";
import { isAllZero } from "./_is_zero.ts";

Deno.test("isAllZero: an empty array is all zero", () => {
  assert.equal(isAllZero(new Uint8Array(0)), true);
});

Deno.test("isAllZero: finds a single set bit at every offset, aligned or not", () => {
  const backing = new Uint8Array(80);
  for (let start = 0; start < 4; start++) {
    for (let length = 1; length <= 70; length++) {
      const view = backing.subarray(start, start + length);
      assert.equal(isAllZero(view), true, `start ${start} length ${length}`);
      for (let i = 0; i < length; i++) {
        for (const bit of [0x01, 0x80]) {
          view[i] = bit;
          assert.equal(isAllZero(view), false, `start ${start} length ${length} byte ${i}`);
          view[i] = 0;
        }
      }
    }
  }
});

Deno.test("isAllZero: ignores non-zero bytes just outside the view", () => {
  const backing = new Uint8Array(70).fill(0xFF);
  backing.fill(0, 3, 67);
  assert.equal(isAllZero(backing.subarray(3, 67)), true);
  assert.equal(isAllZero(backing.subarray(2, 67)), false);
  assert.equal(isAllZero(backing.subarray(3, 68)), false);
});

Deno.test("isAllZero: a 4 MiB block with its last byte set is not zero", () => {
  const block = new Uint8Array(4 * 1024 * 1024);
  assert.equal(isAllZero(block), true);
  block[block.length - 1] = 1;
  assert.equal(isAllZero(block), false);
});
