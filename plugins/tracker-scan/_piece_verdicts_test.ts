import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { PREFILTER_BYTES } from "../../agent/core/mod.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import { judgePiece, type PieceFacts, settleHashed } from "./_piece_verdicts.ts";
import { TABLE_ENTRY_BYTES } from "./prefilter_table.ts";

/** A piece of 6 blocks: value v of block i is [i+1, ...], its BLAKE3 entry is [0x40+i, ...]. */
function piece(): PieceFacts & { blake3: (i: number) => Uint8Array } {
  const count = 6;
  const values = new Uint8Array(count * PREFILTER_BYTES);
  const manifest = new Uint8Array(count * ENTRY_BYTES);
  const table = new Uint8Array(count * TABLE_ENTRY_BYTES);
  const blake3 = (i: number) => new Uint8Array(ENTRY_BYTES).fill(0x40 + i);
  for (let i = 0; i < count; i++) {
    values.fill(i + 1, i * PREFILTER_BYTES, (i + 1) * PREFILTER_BYTES);
    manifest.set(blake3(i), i * ENTRY_BYTES);
    table.fill(i + 1, i * TABLE_ENTRY_BYTES, i * TABLE_ENTRY_BYTES + PREFILTER_BYTES);
    table.set(blake3(i), i * TABLE_ENTRY_BYTES + PREFILTER_BYTES);
  }
  return { count, zero: new Uint8Array(1), values, table, manifest, blake3 };
}

Deno.test("blocks whose pre-filter value matches their table entry are judged without hashing", () => {
  const facts = piece();
  // Block 2 was sent in another state: the manifest moved on, the bytes did not.
  facts.manifest.fill(0x99, 2 * ENTRY_BYTES, 3 * ENTRY_BYTES);
  const verdicts = judgePiece(facts);
  assert.deepStrictEqual(verdicts.toHash, []);
  assert.deepStrictEqual(verdicts.dirty, [2]);
  assert.equal(verdicts.table, null);
});

Deno.test("a new pre-filter value, or an entry with no BLAKE3 half, sends the block to BLAKE3", () => {
  const facts = piece();
  facts.values![1 * PREFILTER_BYTES + 7] ^= 1;
  facts.table!.fill(0, 4 * TABLE_ENTRY_BYTES + PREFILTER_BYTES, 5 * TABLE_ENTRY_BYTES);
  const verdicts = judgePiece(facts);
  assert.deepStrictEqual(verdicts.toHash, [1, 4]);
  assert.deepStrictEqual(verdicts.dirty, []);
  // Block 1 changed and hashes to a new entry; block 4 is what the manifest says.
  const entries = new Uint8Array(2 * ENTRY_BYTES).fill(0x77, 0, ENTRY_BYTES);
  entries.set(facts.blake3(4), ENTRY_BYTES);
  settleHashed(verdicts, facts, entries);
  assert.deepStrictEqual(verdicts.dirty, [1]);
  const table = verdicts.table!;
  assert.deepStrictEqual(
    table.subarray(TABLE_ENTRY_BYTES, 2 * TABLE_ENTRY_BYTES),
    new Uint8Array([
      ...facts.values!.subarray(PREFILTER_BYTES, 2 * PREFILTER_BYTES),
      ...entries.subarray(0, ENTRY_BYTES),
    ]),
  );
  assert.deepStrictEqual(
    table.subarray(4 * TABLE_ENTRY_BYTES + PREFILTER_BYTES, 5 * TABLE_ENTRY_BYTES),
    facts.blake3(4),
  );
  assert.deepStrictEqual(table.subarray(0, TABLE_ENTRY_BYTES), facts.table!.subarray(0, 48));
});

Deno.test("zero blocks are judged by their bytes alone and clear their table entries", () => {
  const facts = piece();
  facts.zero[0] = 0b000101; // blocks 0 and 2 are all zero now
  facts.manifest.fill(0, 2 * ENTRY_BYTES, 3 * ENTRY_BYTES); // the manifest knew block 2 was zero
  // A zero entry with a matching value can never vouch for a data block.
  facts.table!.fill(0, 3 * TABLE_ENTRY_BYTES, 4 * TABLE_ENTRY_BYTES);
  facts.values!.fill(0, 3 * PREFILTER_BYTES, 4 * PREFILTER_BYTES);
  const verdicts = judgePiece(facts);
  assert.deepStrictEqual(verdicts.dirty, [0]);
  assert.deepStrictEqual(verdicts.toHash, [3]);
  const expected = facts.table!.slice();
  expected.fill(0, 0, TABLE_ENTRY_BYTES).fill(0, 2 * TABLE_ENTRY_BYTES, 3 * TABLE_ENTRY_BYTES);
  assertBytesEqual(verdicts.table, expected, "the table");
});

Deno.test("without a pre-filter every non-zero block is hashed and no table is kept", () => {
  const facts = { ...piece(), values: null, table: null };
  facts.zero[0] = 0b100000;
  const verdicts = judgePiece(facts);
  assert.deepStrictEqual(verdicts.toHash, [0, 1, 2, 3, 4]);
  settleHashed(verdicts, facts, new Uint8Array(5 * ENTRY_BYTES));
  assert.deepStrictEqual(verdicts.dirty.sort(), [0, 1, 2, 3, 4, 5]);
  assert.equal(verdicts.table, null);
});
