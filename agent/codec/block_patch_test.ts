import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { applyPatch, decodePatch, encodePatch, MAX_PATCH_RUNS } from "./block_patch.ts";

const BLOCK = 64 * 1024;

function malformedCode(fn: () => unknown): void {
  assert.throws(fn, (err) => err instanceof PresyncError && err.code === ErrorCode.FRAME_MALFORMED);
}

seededTest("block patch: seeded runs round-trip and rebuild the new block over the old", (prng) => {
  for (let round = 0; round < 50; round++) {
    const length = round % 5 === 0 ? 1 + prng.int(BLOCK) : BLOCK; // some short last blocks
    const old = prng.fill(new Uint8Array(length));
    const runs: [number, number][] = [];
    for (let at = prng.int(4096); at < length && runs.length < 20; at += 1 + prng.int(8192)) {
      const run = Math.min(1 + prng.int(6000), length - at);
      runs.push([at, run]);
      at += run;
    }
    if (runs.length === 0) runs.push([0, length]);
    const updated = old.slice();
    for (const [offset, run] of runs) updated.set(prng.fill(new Uint8Array(run)), offset);
    const patch = encodePatch(updated, runs);
    assert.equal(patch.length, 1 + 8 * runs.length + runs.reduce((n, [, r]) => n + r, 0));
    const decoded = decodePatch(patch, length);
    assert.deepEqual(decoded.map((r) => [r.offset, r.bytes.length]), runs);
    assertBytesEqual(applyPatch(old, decoded), updated, `round ${round}: patched block`);
  }
});

Deno.test("block patch: every truncation, and bytes left over, are FRAME_MALFORMED", () => {
  const block = new Uint8Array(BLOCK).fill(7);
  const patch = encodePatch(block, [[0, 100], [4096, 4096]]);
  for (let cut = 0; cut < patch.length; cut++) {
    malformedCode(() => decodePatch(patch.subarray(0, cut), BLOCK));
  }
  const longer = new Uint8Array(patch.length + 1);
  longer.set(patch);
  malformedCode(() => decodePatch(longer, BLOCK));
});

Deno.test("block patch: runs empty, overlapping, out of order or past the block are refused", () => {
  const make = (runs: [number, number][], bytes: number) => {
    const patch = new Uint8Array(1 + 8 * runs.length + bytes);
    const view = new DataView(patch.buffer);
    patch[0] = runs.length;
    runs.forEach(([o, l], i) => {
      view.setUint32(1 + 8 * i, o, true);
      view.setUint32(5 + 8 * i, l, true);
    });
    return patch;
  };
  malformedCode(() => decodePatch(make([], 0), BLOCK));
  malformedCode(() => decodePatch(make([[0, 0]], 0), BLOCK));
  malformedCode(() => decodePatch(make([[0, 10], [5, 10]], 20), BLOCK));
  malformedCode(() => decodePatch(make([[100, 10], [0, 10]], 20), BLOCK));
  malformedCode(() => decodePatch(make([[BLOCK - 5, 10]], 10), BLOCK));
  malformedCode(() => decodePatch(make([[0xFFFF_FFF0, 0x20]], 0x20), BLOCK));
  // A short last block bounds the runs by its own length.
  malformedCode(() => decodePatch(make([[4096, 4096]], 4096), 5000));
  assert.equal(decodePatch(make([[4096, 904]], 904), 5000).length, 1);
  assert.throws(() => encodePatch(new Uint8Array(10), []), RangeError);
  assert.throws(
    () =>
      encodePatch(
        new Uint8Array(4096),
        Array.from({ length: MAX_PATCH_RUNS + 1 }, (_, i) => [i * 2, 1]),
      ),
    RangeError,
  );
});

seededTest(
  "block patch: random bytes decode or fail with FRAME_MALFORMED, never anything else",
  (prng) => {
    for (let i = 0; i < 5000; i++) {
      const bytes = prng.fill(new Uint8Array(prng.int(64)));
      if (bytes.length > 0 && prng.int(2) === 0) bytes[0] = 1 + prng.int(3);
      try {
        for (const run of decodePatch(bytes, 4096)) {
          assert.ok(run.offset + run.bytes.length <= 4096);
        }
      } catch (err) {
        assert.ok(
          err instanceof PresyncError && err.code === ErrorCode.FRAME_MALFORMED,
          String(err),
        );
      }
    }
  },
);
