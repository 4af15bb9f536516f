import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { isZero, zeroBlocks } from "./mod.ts";
import { WINDOW_BYTES } from "./_wasm.ts";

function referenceZeroBlocks(data: Uint8Array, blockSize: number): Uint8Array {
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(Math.ceil(blocks / 8));
  for (let i = 0; i < blocks; i++) {
    if (data.subarray(i * blockSize, (i + 1) * blockSize).every((b) => b === 0)) {
      out[i >> 3] |= 1 << (i & 7);
    }
  }
  return out;
}

/** Mostly-zero data with single nonzero bytes at random places, often at block edges. */
function sparse(prng: Prng, length: number, blockSize: number): Uint8Array {
  const data = new Uint8Array(length);
  const hits = prng.int(Math.ceil(length / blockSize) + 1);
  for (let h = 0; h < hits; h++) {
    const block = prng.int(Math.ceil(length / blockSize));
    const edge = [0, blockSize - 1, prng.int(blockSize)][prng.int(3)];
    const at = Math.min(block * blockSize + edge, length - 1);
    data[at] = 1 + prng.int(255);
  }
  return data;
}

seededTest("zeroBlocks matches a plain TypeScript reference on sizes off every alignment", (
  prng,
) => {
  for (const blockSize of [1, 7, 15, 16, 17, 63, 64, 65, 100, 4096, 65536]) {
    for (let round = 0; round < 20; round++) {
      const length = prng.int(blockSize * 200 + 3);
      const data = sparse(prng, length, blockSize);
      assert.deepStrictEqual(
        zeroBlocks(data, blockSize),
        referenceZeroBlocks(data, blockSize),
        `bs ${blockSize}`,
      );
    }
  }
});

seededTest("zeroBlocks streams inputs larger than the window, with big and odd blocks", (prng) => {
  for (const blockSize of [4096, WINDOW_BYTES / 8 + 1, WINDOW_BYTES + 3]) {
    const data = sparse(prng, 2 * WINDOW_BYTES + 777, blockSize);
    assertBytesEqual(
      zeroBlocks(data, blockSize),
      referenceZeroBlocks(data, blockSize),
      `bs ${blockSize}`,
    );
  }
});

seededTest("isZero finds a single nonzero byte anywhere", (prng) => {
  for (let round = 0; round < 200; round++) {
    const data = new Uint8Array(prng.int(10_000) + 1);
    assert.deepStrictEqual(isZero(data), true);
    data[prng.int(data.length)] = 1 + prng.int(255);
    assert.deepStrictEqual(isZero(data), false);
  }
  assert.deepStrictEqual(isZero(new Uint8Array(0)), true);
});

Deno.test("zeroBlocks rejects a block size of zero", () => {
  assertThrowsCode(() => zeroBlocks(new Uint8Array(10), 0), "INVALID_ARGUMENT");
});
