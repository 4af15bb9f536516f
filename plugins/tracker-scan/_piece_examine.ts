// One piece of the image from its bytes to its verdicts, as a scan pass does it on its own
// thread or on a scan worker: the data extents read into WASM memory (holes zero-filled),
// zero detection and pre-filter values in place, the decisions of `judgePiece`, and BLAKE3
// only for the blocks the pre-filter cannot vouch for.

import {
  blockEntries,
  PREFILTER_BYTES,
  prefilterBlocks,
  type PrefilterKey,
  zeroBlocks,
} from "../../agent/core/mod.ts";
import { concatBytes } from "../../agent/bytes.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { judgePiece, type PieceFacts, settleHashed } from "./_piece_verdicts.ts";

/** A part of a piece: `length` bytes at `at` (relative to the piece); a hole reads as zeros. */
export interface PieceExtent {
  at: number;
  length: number;
  data: boolean;
}

/** What the pass decided about a piece before its bytes are read. */
export interface PiecePlan {
  /** The piece's first block and its number of blocks. */
  first: number;
  count: number;
  /** Where the piece starts in the image, and its length in bytes. */
  offset: number;
  length: number;
  /** Consecutive extents covering `[0, length)`. */
  extents: PieceExtent[];
  /** Baseline manifest entries of the piece's blocks. */
  manifest: Uint8Array;
  /** Pre-filter table entries of the piece's blocks; null without a pre-filter. */
  table: Uint8Array | null;
}

/** What examining a piece found (block numbers relative to the piece). */
export interface Examined {
  /** Blocks whose bytes differ from the baseline manifest. */
  dirty: number[];
  /** The piece's table entries after the scan; null when none changed. */
  table: Uint8Array | null;
  bytesRead: number;
  blocksHashed: number;
  bytesHashed: number;
}

/**
 * Reads the data extents of `plan` into `into` (its first `plan.length` bytes) with
 * `readAt(position, into)`, which returns the bytes it read (fewer only at the end of the
 * image), and zero-fills the holes. Returns the bytes read.
 *
 * @throws {PresyncError} `IO` when the image ends before the piece does
 */
export async function readPiece(
  plan: PiecePlan,
  into: Uint8Array,
  imageBytes: number,
  readAt: (position: number, into: Uint8Array) => number | Promise<number>,
): Promise<number> {
  let bytesRead = 0;
  for (const e of plan.extents) {
    const part = into.subarray(e.at, e.at + e.length);
    if (!e.data) {
      part.fill(0);
      continue;
    }
    const n = await readAt(plan.offset + e.at, part);
    bytesRead += n;
    if (n !== part.length) {
      throw new PresyncError(
        ErrorCode.IO,
        `source image ended at byte ${plan.offset + e.at + n} while scanning (expected ` +
          `${imageBytes} bytes)`,
      );
    }
  }
  return bytesRead;
}

const isZeroBlock = (zero: Uint8Array, i: number) => (zero[i >> 3] & (1 << (i & 7))) !== 0;

/** Pre-filter values of the non-zero blocks of `view` (zero blocks get zeros, unhashed). */
function prefilterNonZero(
  key: PrefilterKey,
  view: Uint8Array,
  zero: Uint8Array,
  count: number,
  blockSize: number,
): Uint8Array {
  const values = new Uint8Array(count * PREFILTER_BYTES);
  for (let i = 0; i < count;) {
    if (isZeroBlock(zero, i)) {
      i++;
      continue;
    }
    let end = i + 1;
    while (end < count && !isZeroBlock(zero, end)) end++;
    values.set(
      prefilterBlocks(key, view.subarray(i * blockSize, end * blockSize), blockSize),
      i * PREFILTER_BYTES,
    );
    i = end;
  }
  return values;
}

/** Consecutive runs `[start, length]` of the sorted block offsets `blocks`. */
function runsOf(blocks: number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (const block of blocks) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === block) last[1]++;
    else runs.push([block, 1]);
  }
  return runs;
}

/**
 * Judges the piece of `plan` whose bytes are `view` (a view of WASM memory, read in place):
 * zero blocks and blocks the pre-filter vouches for without BLAKE3, the others hashed here.
 * Without `key` every non-zero block is hashed.
 */
export function examinePiece(
  plan: PiecePlan,
  view: Uint8Array,
  blockSize: number,
  key: PrefilterKey | null,
): Omit<Examined, "bytesRead"> {
  const zero = zeroBlocks(view, blockSize);
  const facts: PieceFacts = {
    count: plan.count,
    zero,
    values: key ? prefilterNonZero(key, view, zero, plan.count, blockSize) : null,
    table: plan.table,
    manifest: plan.manifest,
  };
  const verdicts = judgePiece(facts);
  let bytesHashed = 0;
  if (verdicts.toHash.length > 0) {
    const entries = runsOf(verdicts.toHash).map(([start, run]) => {
      const part = view.subarray(start * blockSize, (start + run) * blockSize);
      bytesHashed += part.length;
      return blockEntries(part, blockSize);
    });
    settleHashed(verdicts, facts, concatBytes(entries));
  }
  return {
    dirty: verdicts.dirty,
    table: verdicts.table,
    blocksHashed: verdicts.toHash.length,
    bytesHashed,
  };
}
