// The pure decisions of a scan, one piece of consecutive blocks at a time: which blocks are
// known to be unchanged or changed without BLAKE3, which must be hashed, and how the
// pre-filter table changes. No I/O: the scan pass feeds it what it read.

import { PREFILTER_BYTES } from "../../agent/core/mod.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import { TABLE_ENTRY_BYTES } from "./prefilter_table.ts";

/** What a scan found about the blocks of one piece (block numbers relative to the piece). */
export interface PieceVerdicts {
  /** Blocks whose bytes differ from the baseline manifest. */
  readonly dirty: number[];
  /** Blocks to hash with BLAKE3: their pre-filter value is new, or nothing is known. */
  readonly toHash: number[];
  /** The piece's pre-filter table entries after the scan; null when none changed. */
  table: Uint8Array | null;
}

/** What {@linkcode judgePiece} reads; all arrays hold `count` consecutive blocks. */
export interface PieceFacts {
  count: number;
  /** Zero-block bitmap of the piece (bit i: block i is all zero). */
  zero: Uint8Array;
  /** Pre-filter values, PREFILTER_BYTES per block (any bytes for zero blocks); null: none. */
  values: Uint8Array | null;
  /** Table entries, TABLE_ENTRY_BYTES per block; null without a pre-filter. */
  table: Uint8Array | null;
  /** Baseline manifest entries, ENTRY_BYTES per block. */
  manifest: Uint8Array;
}

// Entries are compared a 32-bit word at a time: every field is a multiple of 16 bytes.
const VALUE_WORDS = PREFILTER_BYTES / 4;
const ENTRY_WORDS = ENTRY_BYTES / 4;
const TABLE_WORDS = TABLE_ENTRY_BYTES / 4;

function words(bytes: Uint8Array): Uint32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length >> 2);
}

function equalAt(a: Uint32Array, aAt: number, b: Uint32Array, bAt: number, length: number) {
  for (let i = 0; i < length; i++) if (a[aAt + i] !== b[bAt + i]) return false;
  return true;
}

function zeroAt(a: Uint32Array, at: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (a[at + i] !== 0) return false;
  return true;
}

/**
 * Decides what can be decided without BLAKE3:
 * - an all-zero block is dirty when its manifest entry is not zero; its table entry
 *   becomes zero (nothing stored for zero blocks);
 * - a block whose table entry holds a manifest entry and the block's current pre-filter
 *   value has, but for a pre-filter collision under the secret key (at most 2^-64), the
 *   bytes that entry was made from, so its BLAKE3 is that entry: dirty when the manifest
 *   differs from it;
 * - every other block is to be hashed.
 */
export function judgePiece(facts: PieceFacts): PieceVerdicts {
  const { count, zero } = facts;
  const manifest = words(facts.manifest);
  const values = facts.values && words(facts.values);
  const table = facts.table && words(facts.table);
  const verdicts: PieceVerdicts = { dirty: [], toHash: [], table: null };
  for (let i = 0; i < count; i++) {
    const at = i * TABLE_WORDS;
    if (zero[i >> 3] & (1 << (i & 7))) {
      if (!zeroAt(manifest, i * ENTRY_WORDS, ENTRY_WORDS)) verdicts.dirty.push(i);
      if (table && !zeroAt(table, at, TABLE_WORDS)) {
        verdicts.table ??= facts.table!.slice();
        verdicts.table.fill(0, i * TABLE_ENTRY_BYTES, (i + 1) * TABLE_ENTRY_BYTES);
      }
    } else if (
      values && table &&
      !zeroAt(table, at + VALUE_WORDS, ENTRY_WORDS) &&
      equalAt(table, at, values, i * VALUE_WORDS, VALUE_WORDS)
    ) {
      if (!equalAt(table, at + VALUE_WORDS, manifest, i * ENTRY_WORDS, ENTRY_WORDS)) {
        verdicts.dirty.push(i);
      }
    } else {
      verdicts.toHash.push(i);
    }
  }
  return verdicts;
}

/**
 * Completes `verdicts` with the BLAKE3 manifest entries of its `toHash` blocks (in that
 * order, ENTRY_BYTES each): a block is dirty when its entry differs from the manifest, and
 * its table entry becomes its pre-filter value and that entry.
 */
export function settleHashed(verdicts: PieceVerdicts, facts: PieceFacts, entries: Uint8Array) {
  const { values, table } = facts;
  const manifest = words(facts.manifest);
  const hashed = words(entries);
  verdicts.toHash.forEach((block, k) => {
    if (!equalAt(hashed, k * ENTRY_WORDS, manifest, block * ENTRY_WORDS, ENTRY_WORDS)) {
      verdicts.dirty.push(block);
    }
    if (values && table) {
      const out = verdicts.table ??= table.slice();
      const at = block * TABLE_ENTRY_BYTES;
      out.set(values.subarray(block * PREFILTER_BYTES, (block + 1) * PREFILTER_BYTES), at);
      out.set(entries.subarray(k * ENTRY_BYTES, (k + 1) * ENTRY_BYTES), at + PREFILTER_BYTES);
    }
  });
}
