import assert from "node:assert/strict";
import { Algorithm } from "../../agent/codec/codec.ts";
import { readZstdFrame } from "../../agent/codec/zstd_frame.ts";
import { ErrorCode } from "../../agent/errors.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { testCodecContract, testZstdDecoderBounds } from "../../fixtures/codec_contract.ts";
import { fillText } from "../../fixtures/data.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { createZstdWasmCodec, ZSTD_WASM_MAX_LEVEL, ZSTD_WASM_MIN_LEVEL } from "./mod.ts";

testCodecContract("zstd-wasm", createZstdWasmCodec);
testZstdDecoderBounds("zstd-wasm", createZstdWasmCodec);

Deno.test("zstd-wasm: is named zstd-wasm and shares the zstd algorithm id", async () => {
  const zstd = await createZstdWasmCodec();
  assert.equal(zstd.name, "zstd-wasm");
  assert.equal(zstd.algorithm, Algorithm.ZSTD);
  assert.equal(zstd.defaultLevel, 1);
});

Deno.test("zstd-wasm: creating it twice loads the module once and both codecs work", async () => {
  const [a, b] = await Promise.all([createZstdWasmCodec(), createZstdWasmCodec()]);
  const block = new Uint8Array(5000).fill(9);
  assertBytesEqual(b.decompress(a.compress(block, 3), 5000), block);
});

seededTest(
  "zstd-wasm: frames declare their content size (no checksum: the library can't)",
  async (prng) => {
    const block = fillText(prng, new Uint8Array(65536));
    const info = readZstdFrame((await createZstdWasmCodec()).compress(block, 1));
    assert.equal(info.contentSize, 65536);
    assert.equal(info.hasChecksum, false);
  },
);

seededTest(
  "zstd-wasm: every level from 1 to 19 round-trips; 0 and 20 are rejected",
  async (prng) => {
    const zstd = await createZstdWasmCodec();
    const block = fillText(prng, new Uint8Array(16384));
    for (let level = ZSTD_WASM_MIN_LEVEL; level <= ZSTD_WASM_MAX_LEVEL; level++) {
      assertBytesEqual(zstd.decompress(zstd.compress(block, level), block.length), block);
    }
    for (const level of [0, 20]) {
      assertThrowsCode(() => zstd.compress(block, level), ErrorCode.INVALID_ARGUMENT);
    }
  },
);
