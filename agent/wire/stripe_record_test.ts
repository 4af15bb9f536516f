import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import {
  decodeStripeChunkHeader,
  decodeStripeJoin,
  encodeStripeChunkHeader,
  encodeStripeJoin,
  STRIPE_MAX_CHUNK_BYTES,
  StripeChunkKind,
} from "./stripe_record.ts";

const KEY = new Uint8Array(32).fill(3);

Deno.test("stripe JOIN: round trip; another key, magic or count is refused", () => {
  const join = { groupId: new Uint8Array(16).fill(9), index: 3, count: 4 };
  const bytes = encodeStripeJoin(join, KEY);
  assert.deepEqual(decodeStripeJoin(bytes, KEY), join);
  assertThrowsCode(() => decodeStripeJoin(bytes, new Uint8Array(32)), "FRAME_CORRUPT");
  const plain = bytes.slice();
  plain[0] = 0x47; // "GET " from a stray HTTP client
  assertThrowsCode(() => decodeStripeJoin(plain, KEY), "PROTOCOL_VIOLATION");
  const outOfRange = encodeStripeJoin({ ...join, index: 4 }, KEY);
  assertThrowsCode(() => decodeStripeJoin(outOfRange, KEY), "PROTOCOL_VIOLATION");
});

Deno.test("stripe chunk header: bound to its member counter; every field checked", () => {
  const header = { kind: StripeChunkKind.DATA, length: 1000, seq: 2 ** 40 };
  const bytes = encodeStripeChunkHeader(header, KEY, 7);
  assert.deepEqual(decodeStripeChunkHeader(bytes, KEY, 7), header);
  assertThrowsCode(() => decodeStripeChunkHeader(bytes, KEY, 8), "FRAME_CORRUPT"); // replayed
  for (let bit = 0; bit < 24 * 8; bit++) {
    const flipped = bytes.slice();
    flipped[bit >> 3] ^= 1 << (bit & 7);
    assertThrowsCode(() => decodeStripeChunkHeader(flipped, KEY, 7), "FRAME_CORRUPT");
  }
  const tooLong = { kind: StripeChunkKind.DATA, length: STRIPE_MAX_CHUNK_BYTES + 1, seq: 0 };
  assertThrowsCode(
    () => decodeStripeChunkHeader(encodeStripeChunkHeader(tooLong, KEY, 0), KEY, 0),
    "PROTOCOL_VIOLATION",
  );
  const badEnd = { kind: StripeChunkKind.END, length: 5, seq: 0 };
  assertThrowsCode(
    () => decodeStripeChunkHeader(encodeStripeChunkHeader(badEnd, KEY, 0), KEY, 0),
    "PROTOCOL_VIOLATION",
  );
  const unknown = { kind: 9, length: 0, seq: 0 };
  assertThrowsCode(
    () => decodeStripeChunkHeader(encodeStripeChunkHeader(unknown, KEY, 0), KEY, 0),
    "PROTOCOL_VIOLATION",
  );
});
