import assert from "node:assert/strict";
import { ErrorCode, PresyncError } from "../errors.ts";
import {
  decodeRecordHeader,
  encodeRecordHeader,
  KIND_DATA,
  RECORD_HEADER_BYTES,
} from "./_staging_record.ts";

const BLOCK = 4096;

function header(): Uint8Array {
  const bytes = new Uint8Array(RECORD_HEADER_BYTES).fill(0xaa);
  const hash = new Uint8Array(32).map((_, i) => i);
  encodeRecordHeader({ block: 7, kind: KIND_DATA, length: BLOCK, hash }, bytes);
  return bytes;
}

Deno.test("a record header round-trips, and a flipped bit in its magic, kind, length or reserved bytes is STORE_CORRUPT", () => {
  const decoded = decodeRecordHeader(header(), 0, BLOCK);
  assert.deepEqual(
    { ...decoded, hash: [...decoded.hash] },
    { block: 7, kind: KIND_DATA, length: BLOCK, hash: [...new Uint8Array(32).map((_, i) => i)] },
  );
  // Every byte but the block number (4-7, checked against the generation) and the hash
  // (16-47, checked against the payload) is checked by the header itself.
  for (const at of [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]) {
    for (let bit = 0; bit < 8; bit++) {
      const bytes = header();
      bytes[at] ^= 1 << bit;
      assert.throws(
        () => decodeRecordHeader(bytes, 4096, BLOCK),
        (err: PresyncError) =>
          err.code === ErrorCode.STORE_CORRUPT && err.message.includes("at byte 4096"),
        `byte ${at} bit ${bit}`,
      );
    }
  }
});
