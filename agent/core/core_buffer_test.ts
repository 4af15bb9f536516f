import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { blockEntries, CoreBuffer, isZero, zeroBlocks } from "./mod.ts";
import { alloc, core, free } from "./_wasm.ts";

seededTest("data in a CoreBuffer is hashed and zero-checked in place, as a copy would be", (
  prng,
) => {
  for (const blockSize of [512, 4096, 65536]) {
    const data = prng.fill(new Uint8Array(blockSize * 40 + prng.int(blockSize)));
    for (let i = 0; i < 15; i++) {
      data.fill(0, prng.int(40) * blockSize, (prng.int(40) + 1) * blockSize);
    }
    using buffer = new CoreBuffer(data.length + 64);
    const offset = 1 + prng.int(63);
    buffer.view().set(data, offset);
    const view = buffer.view().subarray(offset, offset + data.length);
    assertBytesEqual(
      blockEntries(view, blockSize),
      blockEntries(data, blockSize),
      `block size ${blockSize}: entries`,
    );
    assert.deepStrictEqual(zeroBlocks(view, blockSize), zeroBlocks(data, blockSize));
    assert.equal(isZero(view.subarray(0, blockSize)), isZero(data.subarray(0, blockSize)));
  }
});

Deno.test("fill reads again when WASM memory grew during the read", async () => {
  using buffer = new CoreBuffer(4096);
  let calls = 0;
  let grown = 0;
  const n = await buffer.fill(4096, async (into) => {
    calls++;
    await Promise.resolve();
    if (calls === 1) {
      // Another allocation lands while the read is in flight and grows memory.
      const before = core.memory.buffer;
      grown = alloc(core.memory.buffer.byteLength);
      assert.notEqual(core.memory.buffer, before);
      assert.equal(into.byteLength, 0, "the old view is detached");
      return 0;
    }
    into.fill(7);
    return into.length;
  });
  free(grown);
  assert.equal(calls, 2);
  assert.equal(n, 4096);
  assert.ok(buffer.view().every((b) => b === 7));
});

Deno.test("a freed CoreBuffer refuses views", () => {
  const buffer = new CoreBuffer(16);
  buffer.free();
  buffer.free();
  assertThrowsCode(() => buffer.view(), "INVALID_ARGUMENT");
});
