import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { CoreBuffer, PREFILTER_BYTES, prefilterBlocks, PrefilterKey } from "./mod.ts";
import { core, MAX_BATCH_BLOCKS } from "./_wasm.ts";
import {
  craftCollision,
  referenceExpand,
  referenceNh,
  referencePrefilter,
} from "../../fixtures/prefilter_reference.ts";

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** `data` copied into WASM memory, so prefilterBlocks reads it in place. */
function inCore(data: Uint8Array): CoreBuffer {
  const buffer = new CoreBuffer(Math.max(1, data.length));
  buffer.view(data.length).set(data);
  return buffer;
}

function valueOf(values: Uint8Array, block: number): string {
  return hex(values.subarray(block * PREFILTER_BYTES, (block + 1) * PREFILTER_BYTES));
}

Deno.test("the WASM core and the TypeScript face agree on the size of a value", () => {
  assert.equal(core.PREFILTER_BYTES.value, PREFILTER_BYTES);
});

seededTest(
  "prefilterBlocks equals the TypeScript reference on unaligned sizes and short last blocks",
  (
    prng,
  ) => {
    const pool = prng.fill(new Uint8Array(600_000));
    for (const blockSize of [32, 48, 100, 1000, 4096, 65536]) {
      const secret = prng.fill(new Uint8Array(32));
      using key = new PrefilterKey(secret, blockSize);
      for (let round = 0; round < 3; round++) {
        const length = prng.int(Math.min(pool.length, blockSize * 9) + 1);
        const offset = prng.int(pool.length - length + 1);
        const data = pool.subarray(offset, offset + length);
        const expected = hex(referencePrefilter(secret, data, blockSize));
        assert.equal(hex(prefilterBlocks(key, data, blockSize)), expected, `bs ${blockSize}`);
        using buffer = inCore(data);
        assert.equal(
          hex(prefilterBlocks(key, buffer.view(length), blockSize)),
          expected,
          `in place, bs ${blockSize}, length ${length}`,
        );
      }
    }
  },
);

seededTest("values do not depend on batching: more blocks than one batch, in place or copied", (
  prng,
) => {
  const blockSize = 4096;
  const data = prng.fill(new Uint8Array(blockSize * (MAX_BATCH_BLOCKS + 300) + 777));
  using key = new PrefilterKey(prng.fill(new Uint8Array(32)), blockSize);
  const all = prefilterBlocks(key, data, blockSize);
  using buffer = inCore(data);
  assert.equal(hex(prefilterBlocks(key, buffer.view(data.length), blockSize)), hex(all));
  const blocks = Math.ceil(data.length / blockSize);
  for (const block of [0, MAX_BATCH_BLOCKS - 1, MAX_BATCH_BLOCKS, blocks - 1, prng.int(blocks)]) {
    const one = data.subarray(block * blockSize, (block + 1) * blockSize);
    assert.equal(valueOf(all, block), hex(prefilterBlocks(key, one, blockSize)), `block ${block}`);
  }
});

seededTest("every bit of the secret and of the block changes the value", (prng: Prng) => {
  const blockSize = 4096;
  const secret = prng.fill(new Uint8Array(32));
  const block = prng.fill(new Uint8Array(blockSize));
  using key = new PrefilterKey(secret, blockSize);
  const value = hex(prefilterBlocks(key, block, blockSize));
  for (let bit = 0; bit < 256; bit++) {
    const other = secret.slice();
    other[bit >> 3] ^= 1 << (bit & 7);
    using otherKey = new PrefilterKey(other, blockSize);
    assert.notEqual(hex(prefilterBlocks(otherKey, block, blockSize)), value, `secret bit ${bit}`);
  }
  for (let round = 0; round < 300; round++) {
    const bit = prng.int(blockSize * 8);
    const changed = block.slice();
    changed[bit >> 3] ^= 1 << (bit & 7);
    assert.notEqual(hex(prefilterBlocks(key, changed, blockSize)), value, `block bit ${bit}`);
  }
  // The expanded key is an extendable output: a key made for larger blocks gives the same
  // values, so the value of a block depends on the secret and the block only.
  using larger = new PrefilterKey(secret, 4 * blockSize);
  assert.equal(hex(prefilterBlocks(larger, block, blockSize)), value);
  assert.equal(
    hex(referenceExpand(secret, blockSize)),
    hex(referenceExpand(secret, 4 * blockSize).subarray(0, blockSize + 16)),
  );
});

seededTest("a block rewritten to collide under a known key still differs under a secret key", (
  prng,
) => {
  const blockSize = 65536;
  // The attacker's key: the expansion of a secret everyone knows (here all zeros).
  const known = new Uint8Array(32);
  const [before, after] = craftCollision(prng, referenceExpand(known, blockSize), blockSize);
  assert.notEqual(hex(before), hex(after));
  using knownKey = new PrefilterKey(known, blockSize);
  assert.equal(
    hex(prefilterBlocks(knownKey, after, blockSize)),
    hex(prefilterBlocks(knownKey, before, blockSize)),
    "the crafted blocks collide under the known key",
  );
  using secretKey = new PrefilterKey(prng.fill(new Uint8Array(32)), blockSize);
  assert.notEqual(
    hex(prefilterBlocks(secretKey, after, blockSize)),
    hex(prefilterBlocks(secretKey, before, blockSize)),
  );
});

seededTest("swapping paired words, invisible to unkeyed NH, changes the keyed value", (prng) => {
  const blockSize = 4096;
  const before = prng.fill(new Uint8Array(blockSize));
  const after = before.slice();
  // Words 2 and 6 of stride 5 are multiplied together; with a zero key the swap is invisible.
  after.set(before.subarray(5 * 32 + 8, 5 * 32 + 12), 5 * 32 + 24);
  after.set(before.subarray(5 * 32 + 24, 5 * 32 + 28), 5 * 32 + 8);
  assert.notEqual(hex(before), hex(after));
  const unkeyed = new Uint8Array(blockSize + 16);
  assert.equal(hex(referenceNh(unkeyed, after)), hex(referenceNh(unkeyed, before)));
  using key = new PrefilterKey(prng.fill(new Uint8Array(32)), blockSize);
  assert.notEqual(
    hex(prefilterBlocks(key, after, blockSize)),
    hex(prefilterBlocks(key, before, blockSize)),
  );
});

Deno.test("prefilterBlocks refuses blocks larger than its key, a freed key and a short secret", () => {
  const key = new PrefilterKey(new Uint8Array(32), 4096);
  assertThrowsCode(() => prefilterBlocks(key, new Uint8Array(8192), 8192), "INVALID_ARGUMENT");
  key.free();
  key.free();
  assertThrowsCode(() => prefilterBlocks(key, new Uint8Array(10), 4096), "INVALID_ARGUMENT");
  assertThrowsCode(() => new PrefilterKey(new Uint8Array(16), 4096), "INVALID_ARGUMENT");
});
