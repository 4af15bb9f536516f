import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { hash as referenceHash, keyedHash as referenceKeyedHash } from "blake3-wasm";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { blake3, Blake3Hasher, blake3Keyed } from "./mod.ts";
import { core, WINDOW_BYTES } from "./_wasm.ts";

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

interface VectorFile {
  key: string;
  cases: { input_len: number; hash: string; keyed_hash: string }[];
}
// The official BLAKE3 test vectors (test_vectors.json of the BLAKE3 project, CC0), as given
// in the project's shared/vectors; kept in the repository so a clone anywhere runs the suite.
const vectors: VectorFile = JSON.parse(
  Deno.readTextFileSync(new URL("../../fixtures/blake3_vectors.json", import.meta.url)),
);

function vectorInput(length: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => i % 251);
}

Deno.test("blake3 matches every official vector, 32-byte and extended outputs", () => {
  for (const c of vectors.cases) {
    const input = vectorInput(c.input_len);
    assert.deepStrictEqual(hex(blake3(input)), c.hash.slice(0, 64), `hash, length ${c.input_len}`);
    assert.deepStrictEqual(
      hex(blake3(input, c.hash.length / 2)),
      c.hash,
      `xof, length ${c.input_len}`,
    );
  }
});

Deno.test("blake3Keyed matches every official keyed_hash vector", () => {
  const key = new TextEncoder().encode(vectors.key);
  for (const c of vectors.cases) {
    const input = vectorInput(c.input_len);
    assert.deepStrictEqual(
      hex(blake3Keyed(key, input)),
      c.keyed_hash.slice(0, 64),
      `len ${c.input_len}`,
    );
    assert.deepStrictEqual(hex(blake3Keyed(key, input, c.keyed_hash.length / 2)), c.keyed_hash);
  }
});

seededTest("blake3 agrees with blake3-wasm around every chunk boundary up to 1 MiB", (prng) => {
  // One random pool; inputs are subarrays at random offsets, so views are exercised too.
  const pool = prng.fill(new Uint8Array(2 * 1024 * 1024));
  const key = prng.fill(new Uint8Array(32));
  let cases = 0;
  for (let chunks = 0; chunks <= 1024; chunks++) {
    for (const delta of [-1, 0, 1]) {
      const length = chunks * 1024 + delta;
      if (length < 0 || length > 1024 * 1024) continue;
      const offset = prng.int(pool.length - length + 1);
      const input = pool.subarray(offset, offset + length);
      assert.deepStrictEqual(
        hex(blake3(input)),
        hex(referenceHash(input) as Uint8Array),
        `len ${length}`,
      );
      if (chunks % 16 === 0) {
        const expected = referenceKeyedHash(Buffer.from(key), input) as Uint8Array;
        assert.deepStrictEqual(hex(blake3Keyed(key, input)), hex(expected), `keyed, len ${length}`);
      }
      cases++;
    }
  }
  for (let i = 0; i < 500; i++) {
    const length = prng.int(1024 * 1024 + 1);
    const input = pool.subarray(0, length);
    assert.deepStrictEqual(
      hex(blake3(input)),
      hex(referenceHash(input) as Uint8Array),
      `len ${length}`,
    );
    cases++;
  }
  assert.deepStrictEqual(cases >= 3500, true);
});

seededTest("Blake3Hasher fed in random pieces equals the one-shot hash", (prng) => {
  for (let round = 0; round < 40; round++) {
    const input = prng.fill(new Uint8Array(prng.int(300_000)));
    using hasher = new Blake3Hasher();
    for (let pos = 0; pos < input.length;) {
      const take = prng.int(5) === 0 ? prng.int(3000) : prng.int(70_000);
      hasher.update(input.subarray(pos, pos + take));
      pos += take;
    }
    assert.deepStrictEqual(hex(hasher.digest()), hex(blake3(input)), `length ${input.length}`);
  }
});

seededTest("inputs larger than the WASM window are streamed through in pieces", (prng) => {
  const input = prng.fill(new Uint8Array(2 * WINDOW_BYTES + 12_345));
  assert.deepStrictEqual(hex(blake3(input)), hex(referenceHash(input) as Uint8Array));
  const key = prng.fill(new Uint8Array(32));
  assert.deepStrictEqual(
    hex(blake3Keyed(key, input)),
    hex(referenceKeyedHash(Buffer.from(key), input) as Uint8Array),
  );
});

Deno.test("blake3 rejects a key that is not 32 bytes and an output length out of range", () => {
  assertThrowsCode(() => blake3Keyed(new Uint8Array(31), new Uint8Array(1)), "INVALID_ARGUMENT");
  assertThrowsCode(() => blake3(new Uint8Array(1), 0), "INVALID_ARGUMENT");
  assertThrowsCode(() => blake3(new Uint8Array(1), 1025), "INVALID_ARGUMENT");
  assertThrowsCode(() => new Blake3Hasher(new Uint8Array(33)), "INVALID_ARGUMENT");
});

Deno.test("freed hashers return their memory and refuse further use", () => {
  // Warm up allocation, then many allocate/free cycles must not grow WASM memory.
  new Blake3Hasher().free();
  const before = core.memory.buffer.byteLength;
  for (let i = 0; i < 10_000; i++) {
    const hasher = new Blake3Hasher();
    hasher.update(new Uint8Array(100));
    hasher.free();
  }
  assert.deepStrictEqual(core.memory.buffer.byteLength, before);
  const hasher = new Blake3Hasher();
  hasher.free();
  hasher.free();
  assertThrowsCode(() => hasher.digest(), "INVALID_ARGUMENT");
});
