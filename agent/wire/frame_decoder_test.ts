import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { PresyncError } from "../errors.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { encodeFrame, type Frame, FRAME_HEADER_BYTES, FrameFlag, FrameType } from "./frame.ts";
import { FrameDecoder } from "./frame_decoder.ts";
import { concatBytes } from "../bytes.ts";

const KEY = new Uint8Array(32).fill(3);
const MAX = 4096;

function decoder(): FrameDecoder {
  return new FrameDecoder({ maxFramePayload: MAX, tagKey: KEY });
}

function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
}

function randomFrame(prng: Prng): Frame {
  switch (prng.int(6)) {
    case 0:
      return {
        type: FrameType.OPEN,
        flags: 0,
        streamId: 1 + prng.int(1000),
        payload: new Uint8Array([prng.int(4)]),
      };
    case 1:
      return {
        type: FrameType.RESET,
        flags: 0,
        streamId: 1 + prng.int(1000),
        payload: u32(prng.int(3)),
      };
    case 2:
      return {
        type: FrameType.WINDOW,
        flags: 0,
        streamId: prng.int(1000),
        payload: u32(1 + prng.int(1 << 20)),
      };
    case 3:
      return {
        type: FrameType.PING,
        flags: prng.int(2) * FrameFlag.ACK,
        streamId: 0,
        payload: prng.fill(new Uint8Array(8)),
      };
    case 4:
      return { type: FrameType.GOAWAY, flags: 0, streamId: 0, payload: u32(prng.int(5)) };
    default:
      return {
        type: FrameType.DATA,
        flags: prng.int(2) * FrameFlag.FIN,
        streamId: 1 + prng.int(1000),
        payload: prng.fill(new Uint8Array(prng.int(MAX + 1))),
      };
  }
}

function encodeAll(frames: Frame[]): Uint8Array {
  return concatBytes(frames.map((f, seq) => encodeFrame(f, KEY, seq)));
}

/** Feeds `bytes` in random pieces; returns the frames or the PresyncError. */
function feed(prng: Prng, d: FrameDecoder, bytes: Uint8Array): Frame[] | PresyncError {
  const frames: Frame[] = [];
  try {
    for (let offset = 0; offset < bytes.length;) {
      const n = 1 + prng.int(Math.min(bytes.length - offset, 9000));
      frames.push(...d.push(bytes.subarray(offset, offset + n)));
      offset += n;
    }
  } catch (error) {
    if (!(error instanceof PresyncError)) throw error;
    assert.ok(error.message.length > 20, "every rejection explains itself");
    return error;
  }
  return frames;
}

seededTest(
  "frame decoder returns exactly the frames encoded, however the bytes are split",
  (prng) => {
    for (let round = 0; round < 200; round++) {
      const frames = Array.from({ length: 1 + prng.int(8) }, () => randomFrame(prng));
      const result = feed(prng, decoder(), encodeAll(frames));
      assert.ok(Array.isArray(result), `round ${round}: ${result}`);
      assert.equal(result.length, frames.length);
      result.forEach((f, i) => {
        assert.equal(f.type, frames[i].type);
        assert.equal(f.flags, frames[i].flags);
        assert.equal(f.streamId, frames[i].streamId);
        assertBytesEqual(f.payload, frames[i].payload, `round ${round}: frame ${i} payload`);
      });
    }
  },
);

seededTest(
  "frame decoder fuzz: 12,000 random and mutated inputs never crash or over-allocate",
  (prng) => {
    const codes = new Map<string, number>();
    for (let round = 0; round < 12000; round++) {
      const d = decoder();
      let bytes: Uint8Array;
      const kind = prng.int(4);
      if (kind === 0) {
        bytes = prng.fill(new Uint8Array(prng.int(200)));
      } else {
        const frames = Array.from({ length: 1 + prng.int(3) }, () => randomFrame(prng));
        bytes = encodeAll(frames);
        if (kind === 1) {
          for (let k = 0, flips = 1 + prng.int(4); k < flips; k++) {
            bytes[prng.int(bytes.length)] ^= 1 << prng.int(8);
          }
        } else if (kind === 2) {
          bytes = bytes.subarray(0, prng.int(bytes.length));
        } else {
          const at = prng.int(bytes.length);
          bytes = Uint8Array.from([
            ...bytes.subarray(0, at),
            ...prng.fill(new Uint8Array(prng.int(30))),
          ]);
        }
      }
      const result = feed(prng, d, bytes);
      assert.ok(d.largestAllocation <= FRAME_HEADER_BYTES + MAX, "bounded allocation");
      if (result instanceof PresyncError) codes.set(result.code, (codes.get(result.code) ?? 0) + 1);
    }
    assert.ok((codes.get("FRAME_CORRUPT") ?? 0) > 0 && (codes.get("FRAME_TOO_LARGE") ?? 0) > 0);
  },
);

seededTest("a corrupted frame is never delivered as good data", (prng) => {
  for (let round = 0; round < 2000; round++) {
    const frame = randomFrame(prng);
    const bytes = encodeFrame(frame, KEY, 0);
    bytes[prng.int(bytes.length)] ^= 1 << prng.int(8);
    const result = feed(prng, decoder(), bytes);
    assert.ok(!Array.isArray(result) || result.length === 0, `round ${round} delivered a frame`);
  }
});

Deno.test("frames with a valid tag but broken fields are PROTOCOL_VIOLATIONs", () => {
  const bad: Frame[] = [
    { type: 9 as FrameType, flags: 0, streamId: 1, payload: new Uint8Array(0) },
    { type: FrameType.DATA, flags: 0x80, streamId: 1, payload: new Uint8Array(0) },
    { type: FrameType.PING, flags: 0, streamId: 0, payload: new Uint8Array(7) },
    { type: FrameType.PING, flags: 0, streamId: 5, payload: new Uint8Array(8) },
    { type: FrameType.OPEN, flags: 0, streamId: 1, payload: new Uint8Array([4]) },
    { type: FrameType.OPEN, flags: 0, streamId: 0, payload: new Uint8Array([0]) },
    { type: FrameType.WINDOW, flags: 0, streamId: 1, payload: u32(0) },
  ];
  for (const frame of bad) {
    assertThrowsCode(() => decoder().push(encodeFrame(frame, KEY, 0)), "PROTOCOL_VIOLATION");
  }
});

Deno.test("an oversize length is rejected from the header alone, before allocation", () => {
  const header = new Uint8Array(FRAME_HEADER_BYTES);
  header[0] = FrameType.DATA;
  new DataView(header.buffer).setUint32(6, 0xFFFF_FFFF, true);
  const d = decoder();
  const error = assertThrowsCode(() => d.push(header), "FRAME_TOO_LARGE");
  assert.match(error.message, /4294967295-byte payload: the maximum agreed is 4096/);
  assert.equal(d.largestAllocation, 0);
  assertThrowsCode(() => d.push(new Uint8Array(1)), "FRAME_TOO_LARGE"); // stays failed
});

Deno.test("frames replayed, dropped or reordered fail the sequence-bound tag", () => {
  const a = encodeFrame({ type: FrameType.GOAWAY, flags: 0, streamId: 0, payload: u32(0) }, KEY, 0);
  const d = decoder();
  d.push(a);
  assertThrowsCode(() => d.push(a), "FRAME_CORRUPT");
});
