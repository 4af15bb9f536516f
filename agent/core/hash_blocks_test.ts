import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { blake3, blockEntries, HASH_BYTES, hashBlocks } from "./mod.ts";
import { WINDOW_BYTES } from "./_wasm.ts";

function referenceHashBlocks(data: Uint8Array, blockSize: number): Uint8Array {
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(blocks * HASH_BYTES);
  for (let i = 0; i < blocks; i++) {
    out.set(blake3(data.subarray(i * blockSize, (i + 1) * blockSize)), i * HASH_BYTES);
  }
  return out;
}

seededTest("hashBlocks gives blake3 of each block, the last one short", (prng) => {
  const pool = prng.fill(new Uint8Array(3 * 1024 * 1024));
  const sizes = [1, 63, 64, 65, 1000, 1024, 1025, 4096, 5000, 65536, 131072];
  for (const blockSize of sizes) {
    for (let round = 0; round < 4; round++) {
      const length = prng.int(Math.min(pool.length, blockSize * 70) + 1);
      const offset = prng.int(pool.length - length + 1);
      const data = pool.subarray(offset, offset + length);
      assertBytesEqual(
        hashBlocks(data, blockSize),
        referenceHashBlocks(data, blockSize),
        `bs ${blockSize}`,
      );
    }
  }
});

seededTest("hashBlocks handles more blocks than one batch and blocks larger than the window", (
  prng,
) => {
  const many = prng.fill(new Uint8Array(4096 * 5000 + 17));
  assertBytesEqual(hashBlocks(many, 4096), referenceHashBlocks(many, 4096), "5001 blocks");
  const huge = prng.fill(new Uint8Array(WINDOW_BYTES * 2 + 99));
  assertBytesEqual(
    hashBlocks(huge, WINDOW_BYTES + 1),
    referenceHashBlocks(huge, WINDOW_BYTES + 1),
    "blocks larger than the window",
  );
});

Deno.test("hashBlocks of an empty input is empty", () => {
  assert.deepStrictEqual(hashBlocks(new Uint8Array(0), 4096).length, 0);
});

seededTest("blockEntries gives zeros for all-zero blocks and blake3 for the others", (prng) => {
  for (const blockSize of [1, 100, 4096, 65536, WINDOW_BYTES + 5]) {
    const blocks = 1 + prng.int(blockSize > 65536 ? 3 : 90);
    const data = new Uint8Array(blocks * blockSize - prng.int(blockSize));
    for (let b = 0; b < blocks; b++) {
      if (prng.int(2) === 0) {
        data[Math.min(data.length - 1, b * blockSize + prng.int(blockSize))] = 1;
      }
    }
    const expected = referenceHashBlocks(data, blockSize);
    for (let b = 0; b * blockSize < data.length; b++) {
      if (data.subarray(b * blockSize, (b + 1) * blockSize).every((x) => x === 0)) {
        expected.fill(0, b * HASH_BYTES, (b + 1) * HASH_BYTES);
      }
    }
    assertBytesEqual(blockEntries(data, blockSize), expected, `block size ${blockSize}`);
  }
});
