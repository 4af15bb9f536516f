import assert from "node:assert/strict";
import { ErrorCode, PresyncError } from "../errors.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { fillText, mixedData } from "../../fixtures/data.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { compressedZstdBomb } from "../../fixtures/zstd_frames.ts";
import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { createZstdWasmCodec } from "../../plugins/codec-zstd-wasm/mod.ts";
import {
  BLOCK_FRAME_HEADER_BYTES,
  decodeBlockFrame,
  encodeBlockFrame,
  ZERO_MARKER_KIND,
} from "./block_frame.ts";
import { Algorithm, type Codec } from "./codec.ts";

const BLOCK = 64 * 1024;
const zstd = createZstdCodec();
const none = createNoneCodec();
const codecs = [zstd];
const decode = (frame: Uint8Array, maxRawLength = BLOCK) =>
  decodeBlockFrame(frame, { maxRawLength, codecs });

/** Returns `frame` with its raw length field replaced. */
function withRawLength(frame: Uint8Array, rawLength: number): Uint8Array {
  const copy = frame.slice();
  new DataView(copy.buffer).setUint32(1, rawLength, true);
  return copy;
}

/** A codec that records its calls and delegates to `inner`. */
function spyCodec(inner: Codec): Codec & { levels: number[] } {
  const levels: number[] = [];
  return {
    ...inner,
    levels,
    compress(block, level) {
      levels.push(level);
      return inner.compress(block, level);
    },
  };
}

Deno.test("encodeBlockFrame: an all-zero 64 KiB block becomes the 5-byte zero marker", () => {
  const frame = encodeBlockFrame(new Uint8Array(BLOCK), zstd);
  assert.deepEqual([...frame], [0x00, 0x00, 0x00, 0x01, 0x00]);
  assertBytesEqual(decode(frame), new Uint8Array(BLOCK));
});

Deno.test("encodeBlockFrame: an empty block becomes a zero marker of raw length 0", () => {
  const frame = encodeBlockFrame(new Uint8Array(0), zstd);
  assert.deepEqual([...frame], [ZERO_MARKER_KIND, 0, 0, 0, 0]);
  assert.equal(decode(frame).length, 0);
});

seededTest("encodeBlockFrame: a block compression does not shrink is sent raw", (prng) => {
  const abc = encodeBlockFrame(new TextEncoder().encode("abc"), zstd);
  assert.deepEqual([...abc], [0x01, 0x03, 0x00, 0x00, 0x00, 0x61, 0x62, 0x63]);
  const random = prng.fill(new Uint8Array(BLOCK));
  const frame = encodeBlockFrame(random, zstd);
  assert.equal(frame[0], Algorithm.NONE);
  assert.equal(frame.length, BLOCK_FRAME_HEADER_BYTES + BLOCK);
  assertBytesEqual(decode(frame), random);
});

seededTest(
  "encodeBlockFrame: a compressible block is sent with the codec's algorithm id",
  (prng) => {
    const text = fillText(prng, new Uint8Array(BLOCK));
    const frame = encodeBlockFrame(text, zstd);
    assert.equal(frame[0], Algorithm.ZSTD);
    assert.equal(new DataView(frame.buffer).getUint32(1, true), BLOCK);
    assert.ok(frame.length < BLOCK / 2, `${frame.length} bytes`);
    assertBytesEqual(decode(frame), text);
  },
);

seededTest("encodeBlockFrame: with codec none every non-zero block is sent raw", (prng) => {
  const text = fillText(prng, new Uint8Array(1000));
  const frame = encodeBlockFrame(text, none);
  assert.equal(frame[0], Algorithm.NONE);
  assertBytesEqual(decodeBlockFrame(frame, { maxRawLength: 1000, codecs: [] }), text);
});

Deno.test("encodeBlockFrame: passes the level option, else the codec's default level", () => {
  const spy = spyCodec(zstd);
  const block = new Uint8Array(100).fill(3);
  encodeBlockFrame(block, spy);
  encodeBlockFrame(block, spy, { level: 7 });
  assert.deepEqual(spy.levels, [1, 7]);
  assertThrowsCode(() => encodeBlockFrame(block, zstd, { level: 0 }), ErrorCode.INVALID_ARGUMENT);
});

Deno.test("encodeBlockFrame: uses the isZero option instead of its own check", () => {
  const calls: number[] = [];
  const zeroBlock = new Uint8Array(BLOCK);
  const frame = encodeBlockFrame(zeroBlock, zstd, {
    isZero: (b) => {
      calls.push(b.length);
      return false;
    },
  });
  assert.deepEqual(calls, [BLOCK]);
  assert.equal(frame[0], Algorithm.ZSTD, "not a zero marker since isZero said no");
  assertBytesEqual(decode(frame), zeroBlock);
});

Deno.test("encodeBlockFrame: the frame shares no memory with the block", () => {
  const block = new Uint8Array([1, 2, 3]);
  const frame = encodeBlockFrame(block, none);
  block[0] = 9;
  assert.deepEqual([...frame], [0x01, 3, 0, 0, 0, 1, 2, 3]);
});

seededTest(
  "block frames round-trip 4 MiB of mixed data in 64 KiB blocks with every codec",
  async (prng) => {
    const data = mixedData(prng, 4 * 1024 * 1024);
    const wasm = await createZstdWasmCodec();
    for (const codec of [zstd, wasm, none]) {
      const kinds = new Set<number>();
      for (let offset = 0; offset < data.length; offset += BLOCK) {
        const block = data.subarray(offset, offset + BLOCK);
        const frame = encodeBlockFrame(block, codec);
        kinds.add(frame[0]);
        const back = decodeBlockFrame(frame, { maxRawLength: BLOCK, codecs: [codec] });
        assertBytesEqual(back, block, `${codec.name} block at ${offset}`);
      }
      const expected = codec === none ? [0x00, 0x01] : [0x00, 0x01, 0x02];
      assert.deepEqual([...kinds].sort(), expected, `${codec.name} kinds`);
    }
  },
);

seededTest("block frames round-trip a 4 MiB block (the largest block size)", (prng) => {
  const block = mixedData(prng, 4 * 1024 * 1024);
  const frame = encodeBlockFrame(block, zstd);
  assert.equal(frame[0], Algorithm.ZSTD);
  assertBytesEqual(decode(frame, block.length), block);
});

seededTest(
  "decodeBlockFrame: rejects every truncation of a zero, raw and compressed frame",
  (prng) => {
    const frames = [
      encodeBlockFrame(new Uint8Array(BLOCK), zstd),
      encodeBlockFrame(prng.fill(new Uint8Array(300)), zstd),
      encodeBlockFrame(fillText(prng, new Uint8Array(3000)), zstd),
    ];
    assert.deepEqual(frames.map((f) => f[0]), [0x00, 0x01, 0x02]);
    for (const frame of frames) {
      for (let length = 0; length < frame.length; length++) {
        const error = assertThrowsCode(
          () => decode(frame.subarray(0, length)),
          ErrorCode.FRAME_MALFORMED,
        );
        if (length < BLOCK_FRAME_HEADER_BYTES) {
          assert.match(
            error.message,
            new RegExp(`expected at least 5 header bytes, received ${length}`),
          );
        }
      }
    }
  },
);

Deno.test("decodeBlockFrame: rejects a raw frame whose raw length lies", () => {
  const frame = encodeBlockFrame(new Uint8Array([1, 2, 3, 4]), zstd);
  for (const lie of [3, 5, 0]) {
    assert.match(
      assertThrowsCode(() => decode(withRawLength(frame, lie)), ErrorCode.FRAME_MALFORMED).message,
      new RegExp(`expected ${lie} bytes, received 4$`),
    );
  }
});

seededTest("decodeBlockFrame: rejects a compressed frame whose raw length lies", (prng) => {
  const frame = encodeBlockFrame(fillText(prng, new Uint8Array(BLOCK)), zstd);
  for (const lie of [BLOCK - 1, BLOCK - 1000]) {
    assert.match(
      assertThrowsCode(() => decode(withRawLength(frame, lie)), ErrorCode.FRAME_MALFORMED)
        .message,
      new RegExp(`expected ${lie}, received ${BLOCK}`),
    );
  }
});

Deno.test("decodeBlockFrame: rejects a raw length over maxRawLength before allocating", () => {
  const zeroMarker = new Uint8Array([0x00, 0xFF, 0xFF, 0xFF, 0xFF]);
  assert.match(
    assertThrowsCode(() => decode(zeroMarker), ErrorCode.FRAME_MALFORMED).message,
    /declares raw length 4294967295: expected at most 65536/,
  );
  const raw = encodeBlockFrame(new Uint8Array([5, 6]), zstd);
  assert.match(
    assertThrowsCode(() => decode(raw, 1), ErrorCode.FRAME_MALFORMED).message,
    /at most 1$/,
  );
});

Deno.test("decodeBlockFrame: rejects every unassigned kind byte as CODEC_UNKNOWN", () => {
  for (let kind = 0x03; kind <= 0xFF; kind++) {
    const frame = new Uint8Array([kind, 4, 0, 0, 0, 1, 2]);
    assert.match(
      assertThrowsCode(() => decode(frame), ErrorCode.CODEC_UNKNOWN).message,
      new RegExp(`unknown kind byte 0x${kind.toString(16).padStart(2, "0")}: expected 0x00`),
    );
  }
});

Deno.test("decodeBlockFrame: a zstd frame without a zstd codec loaded is CODEC_UNKNOWN", () => {
  const frame = encodeBlockFrame(new Uint8Array(1000).fill(7), zstd);
  for (const [loaded, named] of [[[none], "none \\(0x01\\)"], [[], "none"]] as const) {
    assert.match(
      assertThrowsCode(
        () => decodeBlockFrame(frame, { maxRawLength: BLOCK, codecs: loaded }),
        ErrorCode.CODEC_UNKNOWN,
      )
        .message,
      new RegExp(`compressed with zstd \\(kind 0x02\\) but no loaded codec .*: loaded ${named}$`),
    );
  }
});

Deno.test("decodeBlockFrame: rejects a zero marker that carries a payload", () => {
  assert.match(
    assertThrowsCode(() => decode(new Uint8Array([0x00, 4, 0, 0, 0, 0])), ErrorCode.FRAME_MALFORMED)
      .message,
    /zero-marker block frame carries a payload: expected 0 bytes, received 1/,
  );
});

Deno.test("decodeBlockFrame: rejects a compressed payload not smaller than its raw length", () => {
  const payload = zstd.compress(new Uint8Array([1, 2, 3]), 1);
  const frame = new Uint8Array(BLOCK_FRAME_HEADER_BYTES + payload.length);
  frame.set([Algorithm.ZSTD, payload.length]);
  frame.set(payload, BLOCK_FRAME_HEADER_BYTES);
  assert.match(
    assertThrowsCode(() => decode(frame), ErrorCode.FRAME_MALFORMED).message,
    new RegExp(`expected fewer than ${payload.length} bytes, received ${payload.length}`),
  );
});

Deno.test("decodeBlockFrame: rejects a zip bomb payload without decoding it", () => {
  const bomb = compressedZstdBomb(256 * 1024 * 1024, BLOCK);
  const frame = new Uint8Array(BLOCK_FRAME_HEADER_BYTES + bomb.length);
  frame.set([Algorithm.ZSTD]);
  new DataView(frame.buffer).setUint32(1, BLOCK, true);
  frame.set(bomb, BLOCK_FRAME_HEADER_BYTES);
  assertThrowsCode(() => decode(frame), ErrorCode.FRAME_MALFORMED);
});

Deno.test("decodeBlockFrame: wraps a codec's plain error as FRAME_MALFORMED with its cause", () => {
  const cause = new Error("library exploded");
  const broken: Codec = {
    ...zstd,
    name: "broken",
    decompress: () => {
      throw cause;
    },
  };
  const frame = encodeBlockFrame(new Uint8Array(1000).fill(7), zstd);
  const error = assertThrowsCode(
    () => decodeBlockFrame(frame, { maxRawLength: BLOCK, codecs: [broken] }),
    ErrorCode.FRAME_MALFORMED,
  );
  assert.match(
    error.message,
    /broken could not decode a \d+-byte payload of raw length 1000: library exploded/,
  );
  assert.equal(error.cause, cause);
});

Deno.test("decodeBlockFrame: rejects a codec result of the wrong length", () => {
  const liar: Codec = { ...zstd, name: "liar", decompress: () => new Uint8Array(999) };
  const frame = encodeBlockFrame(new Uint8Array(1000).fill(7), zstd);
  assert.match(
    assertThrowsCode(
      () => decodeBlockFrame(frame, { maxRawLength: BLOCK, codecs: [liar] }),
      ErrorCode.FRAME_MALFORMED,
    )
      .message,
    /liar decoded a block of the wrong length: expected 1000 bytes, received 999/,
  );
});

Deno.test("decodeBlockFrame: rejects a maxRawLength that is not a u32", () => {
  const frame = encodeBlockFrame(new Uint8Array(1), zstd);
  for (const bad of [-1, 2 ** 32, 1.5]) {
    assert.match(
      assertThrowsCode(() => decode(frame, bad), ErrorCode.INVALID_ARGUMENT).message,
      /maxRawLength/,
    );
  }
});

seededTest(
  "decodeBlockFrame: damaged frames (bit flips, cuts, extra bytes) throw a PresyncError or " +
    "decode to exactly the declared raw length, with every codec",
  async (prng) => {
    const wasm = await createZstdWasmCodec();
    const data = mixedData(prng, 16 * BLOCK);
    for (const codec of [zstd, wasm]) {
      const frames: Uint8Array[] = [];
      for (let offset = 0; offset < data.length; offset += BLOCK) {
        frames.push(encodeBlockFrame(data.subarray(offset, offset + 4096), codec));
      }
      for (let trial = 0; trial < 2000; trial++) {
        let damaged: Uint8Array = frames[prng.int(frames.length)].slice();
        switch (prng.int(3)) {
          case 0:
            for (let f = 1 + prng.int(4); f > 0; f--) {
              damaged[prng.int(damaged.length)] ^= 1 << prng.int(8);
            }
            break;
          case 1:
            damaged = damaged.subarray(0, prng.int(damaged.length));
            break;
          default: {
            const longer = new Uint8Array(damaged.length + 1 + prng.int(8));
            longer.set(damaged);
            prng.fill(longer.subarray(damaged.length));
            damaged = longer;
          }
        }
        try {
          const block = decodeBlockFrame(damaged, { maxRawLength: BLOCK, codecs: [codec] });
          const declared = new DataView(damaged.buffer, damaged.byteOffset).getUint32(1, true);
          assert.equal(block.length, declared, `${codec.name} trial ${trial}`);
        } catch (error) {
          if (!(error instanceof PresyncError)) throw error;
          assert.ok(
            error.code === ErrorCode.FRAME_MALFORMED || error.code === ErrorCode.CODEC_UNKNOWN,
            `${codec.name} trial ${trial}: ${error.code}`,
          );
        }
      }
    }
  },
);
