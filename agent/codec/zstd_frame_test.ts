import assert from "node:assert/strict";
import { zstdCompressSync } from "node:zlib";
import { ErrorCode } from "../errors.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { fillText } from "../../fixtures/data.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { rleZstdFrame } from "../../fixtures/zstd_frames.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { assertZstdPayload, readZstdFrame } from "./zstd_frame.ts";

const zstd = createZstdCodec();

seededTest(
  "readZstdFrame: reads content size, checksum flag and length of a real frame",
  (prng) => {
    const block = fillText(prng, new Uint8Array(300_000));
    const frame = zstd.compress(block, 3);
    const info = readZstdFrame(frame);
    assert.equal(info.contentSize, 300_000);
    assert.equal(info.hasChecksum, true);
    assert.equal(info.dictionaryId, 0);
    assert.equal(info.frameBytes, frame.length);
    assert.ok(info.blockCount >= 3, `${info.blockCount} blocks for 300 000 bytes`);
  },
);

Deno.test("readZstdFrame: reads every Frame_Content_Size field width (1, 2, 4, 8 bytes)", () => {
  for (const size of [0, 255, 256, 65791, 65792, 1 << 20]) {
    const frame = zstdCompressSync(new Uint8Array(size), { pledgedSrcSize: size } as never);
    assert.equal(readZstdFrame(frame).contentSize, size, `${size}-byte input`);
  }
  const eight = rleZstdFrame({ blockCount: 1, blockBytes: 10, declaredContentSize: 2 ** 40 });
  assert.equal(readZstdFrame(eight).contentSize, 2 ** 40);
});

Deno.test("readZstdFrame: a streaming frame declares no content size", () => {
  assert.equal(readZstdFrame(zstdCompressSync(new Uint8Array(100))).contentSize, undefined);
});

Deno.test("readZstdFrame: adds up raw and RLE block sizes as a lower bound", () => {
  const frame = rleZstdFrame({ blockCount: 3, blockBytes: 1000, declaredContentSize: 3000 });
  const info = readZstdFrame(frame);
  assert.equal(info.blockCount, 3);
  assert.equal(info.minDecodedBytes, 3000);
  assert.equal(info.frameBytes, frame.length);
});

Deno.test("readZstdFrame: rejects a wrong magic number, naming both", () => {
  const frame = zstd.compress(new Uint8Array(100).fill(1), 1).slice();
  frame[0] ^= 0xFF;
  assert.match(
    assertThrowsCode(() => readZstdFrame(frame), ErrorCode.FRAME_MALFORMED).message,
    /expected 0xfd2fb528, received 0xfd2fb5d7/,
  );
});

Deno.test("readZstdFrame: rejects a skippable frame", () => {
  const skippable = new Uint8Array([0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0]);
  assert.match(
    assertThrowsCode(() => readZstdFrame(skippable), ErrorCode.FRAME_MALFORMED).message,
    /skippable/,
  );
});

Deno.test("readZstdFrame: rejects the reserved descriptor bit and the reserved block type", () => {
  const frame = rleZstdFrame({ blockCount: 1, blockBytes: 10, declaredContentSize: 10 });
  const reservedBit = frame.slice();
  reservedBit[4] |= 0x08;
  assert.match(
    assertThrowsCode(() => readZstdFrame(reservedBit), ErrorCode.FRAME_MALFORMED).message,
    /bit 3/,
  );
  const reservedType = frame.slice();
  reservedType[14] |= 0x06; // block header starts after magic, descriptor, window, 8-byte FCS
  assert.match(
    assertThrowsCode(() => readZstdFrame(reservedType), ErrorCode.FRAME_MALFORMED).message,
    /reserved block type/,
  );
});

Deno.test("readZstdFrame: rejects a block declaring more than 128 KiB", () => {
  const frame = rleZstdFrame({ blockCount: 1, blockBytes: 10, declaredContentSize: 10 });
  frame[16] = 0x20; // Block_Size bits 19..23: 2^18 + 10 bytes
  assert.match(
    assertThrowsCode(() => readZstdFrame(frame), ErrorCode.FRAME_MALFORMED).message,
    /declares 262154 bytes: expected at most 131072/,
  );
});

seededTest(
  "readZstdFrame: rejects every truncation of a frame, naming the missing part",
  (prng) => {
    const frame = zstd.compress(fillText(prng, new Uint8Array(5000)), 1);
    for (let length = 0; length < frame.length; length++) {
      assert.match(
        assertThrowsCode(() => readZstdFrame(frame.subarray(0, length)), ErrorCode.FRAME_MALFORMED)
          .message,
        new RegExp(`truncated in the .*: expected at least \\d+ bytes, received ${length}$`),
      );
    }
  },
);

Deno.test("assertZstdPayload: accepts one frame declaring exactly the raw length", () => {
  const frame = zstd.compress(new Uint8Array(4096).fill(5), 1);
  assert.equal(assertZstdPayload(frame, 4096).contentSize, 4096);
});

Deno.test("assertZstdPayload: rejects bytes after the frame, even a second frame", () => {
  const frame = zstd.compress(new Uint8Array(4096).fill(5), 1);
  const twice = new Uint8Array(frame.length * 2);
  twice.set(frame);
  twice.set(frame, frame.length);
  assert.match(
    assertThrowsCode(() => assertZstdPayload(twice, 4096), ErrorCode.FRAME_MALFORMED).message,
    new RegExp(`${frame.length} bytes after its frame`),
  );
});

Deno.test("assertZstdPayload: rejects a frame without content size or with another one", () => {
  assert.match(
    assertThrowsCode(
      () => assertZstdPayload(zstdCompressSync(new Uint8Array(4096)), 4096),
      ErrorCode.FRAME_MALFORMED,
    )
      .message,
    /does not declare its content size: expected 4096, received none/,
  );
  assert.match(
    assertThrowsCode(
      () => assertZstdPayload(zstd.compress(new Uint8Array(4096), 1), 4095),
      ErrorCode.FRAME_MALFORMED,
    )
      .message,
    /expected 4095, received 4096/,
  );
});

Deno.test("assertZstdPayload: rejects a frame that needs a dictionary", () => {
  const frame = rleZstdFrame({ blockCount: 1, blockBytes: 10, declaredContentSize: 10 });
  const withDictionary = new Uint8Array(frame.length + 1);
  withDictionary.set(frame.subarray(0, 6));
  withDictionary[4] |= 0x01; // one-byte Dictionary_ID after the window descriptor
  withDictionary[6] = 42;
  withDictionary.set(frame.subarray(6), 7);
  assert.match(
    assertThrowsCode(() => assertZstdPayload(withDictionary, 10), ErrorCode.FRAME_MALFORMED)
      .message,
    /needs dictionary 42/,
  );
});

Deno.test("assertZstdPayload: rejects RLE blocks decoding past the raw length (zip bomb)", () => {
  const bomb = rleZstdFrame({ blockCount: 8192, blockBytes: 131072, declaredContentSize: 65536 });
  assert.match(
    assertThrowsCode(() => assertZstdPayload(bomb, 65536), ErrorCode.FRAME_MALFORMED).message,
    /decode to 1073741824 bytes: expected at most 65536/,
  );
});
