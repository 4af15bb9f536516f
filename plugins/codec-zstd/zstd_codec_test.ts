import assert from "node:assert/strict";
import { zstdDecompressSync } from "node:zlib";
import { Algorithm } from "../../agent/codec/codec.ts";
import { readZstdFrame } from "../../agent/codec/zstd_frame.ts";
import { ErrorCode } from "../../agent/errors.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { testCodecContract, testZstdDecoderBounds } from "../../fixtures/codec_contract.ts";
import { fillText } from "../../fixtures/data.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { compressedZstdBomb } from "../../fixtures/zstd_frames.ts";
import { createZstdCodec, ZSTD_MAX_LEVEL, ZSTD_MIN_LEVEL } from "./mod.ts";

testCodecContract("zstd-native", () => createZstdCodec());
testZstdDecoderBounds("zstd-native", () => createZstdCodec());
testCodecContract("zstd-native without checksum", () => createZstdCodec({ checksum: false }));

Deno.test("zstd-native: is named zstd-native, uses the zstd algorithm id, level 1 by default", () => {
  const zstd = createZstdCodec();
  assert.equal(zstd.name, "zstd-native");
  assert.equal(zstd.algorithm, Algorithm.ZSTD);
  assert.equal(zstd.defaultLevel, 1);
});

seededTest(
  "zstd-native: frames declare their content size and carry a checksum by default",
  (prng) => {
    const block = fillText(prng, new Uint8Array(65536));
    const info = readZstdFrame(createZstdCodec().compress(block, 1));
    assert.equal(info.contentSize, 65536);
    assert.equal(info.hasChecksum, true);
    const bare = readZstdFrame(createZstdCodec({ checksum: false }).compress(block, 1));
    assert.equal(bare.contentSize, 65536);
    assert.equal(bare.hasChecksum, false);
  },
);

seededTest("zstd-native: every level from 1 to 19 round-trips; 0 and 20 are rejected", (prng) => {
  const zstd = createZstdCodec();
  const block = fillText(prng, new Uint8Array(16384));
  for (let level = ZSTD_MIN_LEVEL; level <= ZSTD_MAX_LEVEL; level++) {
    assertBytesEqual(zstd.decompress(zstd.compress(block, level), block.length), block);
  }
  for (const level of [0, 20, -1]) {
    assert.match(
      assertThrowsCode(() => zstd.compress(block, level), ErrorCode.INVALID_ARGUMENT).message,
      new RegExp(`from 1 to 19: received ${level}`),
    );
  }
});

Deno.test("zstd-native: results are plain Uint8Arrays, not node Buffers", () => {
  const zstd = createZstdCodec();
  const payload = zstd.compress(new Uint8Array(1000).fill(1), 1);
  assert.equal(Object.getPrototypeOf(payload), Uint8Array.prototype);
  assert.equal(Object.getPrototypeOf(zstd.decompress(payload, 1000)), Uint8Array.prototype);
});

Deno.test("zstd-native: a lying header is stopped by the decoder at the raw length", () => {
  const bomb = compressedZstdBomb(16 * 1024 * 1024, 65536);
  assert.match(
    assertThrowsCode(() => createZstdCodec().decompress(bomb, 65536), ErrorCode.FRAME_MALFORMED)
      .message,
    /does not decode to exactly 65536 bytes: it is corrupt or lies about its size/,
  );
});

seededTest(
  "zstd-native: compress returns exactly one frame where node:zlib appends an empty one",
  (prng) => {
    // Deno 2.9's zstdCompressSync appends an empty frame once the output passes ~16 KiB.
    const zstd = createZstdCodec();
    for (const length of [65535, 65536, 65537, 300000]) {
      const block = fillText(prng, new Uint8Array(length));
      const payload = zstd.compress(block, 1);
      assert.equal(readZstdFrame(payload).frameBytes, payload.length, `${length}-byte block`);
      assertBytesEqual(zstdDecompressSync(payload), block);
    }
  },
);

seededTest(
  "zstd-native: incompressible blocks of any size still give exactly one frame",
  (prng) => {
    // Random data makes node:zlib's output span several internal chunks; it then appends one
    // or two empty frames, which must be cut off, never reported as corruption.
    const zstd = createZstdCodec();
    for (let round = 0; round < 200; round++) {
      const block = prng.fill(new Uint8Array(4096 + prng.int(256 * 1024)));
      const payload = zstd.compress(block, 1);
      assert.equal(readZstdFrame(payload).frameBytes, payload.length, `${block.length}-byte block`);
      assertBytesEqual(zstdDecompressSync(payload), block);
    }
  },
);
