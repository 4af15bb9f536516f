// One pass of the scan tracker over the whole image: large sequential reads into WASM memory
// (never copied), zero detection and pre-filter values in place, BLAKE3 only for the blocks
// the pre-filter cannot vouch for, and the comparison with the baseline manifest.

import {
  type Bitmap,
  blockEntries,
  BlockEntriesPool,
  CoreBuffer,
  PREFILTER_BYTES,
  prefilterBlocks,
  type PrefilterKey,
  zeroBlocks,
} from "../../agent/core/mod.ts";
import { concatBytes } from "../../agent/bytes.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { FileHandle } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import type { RateLimiter } from "../../agent/rate_limiter.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import type { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { blockCount, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import {
  judgePiece,
  type PieceFacts,
  type PieceVerdicts,
  settleHashed,
} from "./_piece_verdicts.ts";
import { type PrefilterTable, TABLE_ENTRY_BYTES, TABLE_FLUSH_BYTES } from "./prefilter_table.ts";

/** Bytes read per sequential read while scanning (or one block when blocks are larger). */
export const SCAN_READ_BYTES = 2 * 1024 * 1024;
/** Reads queued ahead of the piece being judged. */
const READ_AHEAD = 2;
/** Pieces whose manifest and table entries are read at once. */
const GROUP_PIECES = 16;
/** Extents asked for per piece; a piece more fragmented than that reads its rest whole. */
const PIECE_EXTENTS = 64;

/** What {@linkcode scanPass} works on. */
export interface ScanPassOptions {
  /**
   * Handles on the image: consecutive pieces are read through them in turn, so with two
   * handles two reads run at once (each handle's reads are one at a time).
   */
  images: FileHandle[];
  identity: VolumeIdentity;
  manifest: ManifestFile;
  limiter: RateLimiter;
  /** Hashing workers to start once hashing on this thread passed `hashOnWorkersAfterBytes`. */
  workers: number;
  hashOnWorkersAfterBytes: number;
  /** The key and table; null: every non-zero block is hashed. */
  prefilter: { key: PrefilterKey; table: PrefilterTable } | null;
  /** The first block to compare (blocks before it were compared by an earlier run). */
  startBlock: number;
  /** Receives the blocks that differ from the manifest. */
  dirty: Bitmap;
  /** Called once per piece, in block order, after its blocks are compared. */
  afterPiece?: (nextBlock: number, pieceBytes: number) => Promise<void>;
  /** Stops the pass between pieces (the staged table entries are kept). */
  signal?: AbortSignal;
}

/** What one pass cost. */
export interface ScanPassStats {
  bytesRead: number;
  /** Bytes in holes of the image (`SEEK_HOLE`): taken as zeros, not read. */
  holeBytes: number;
  blocksHashed: number;
  bytesHashed: number;
  /** Time spent waiting for the read-rate cap. */
  throttledMs: number;
}

interface Piece {
  first: number;
  count: number;
  length: number;
  buffer: CoreBuffer;
  manifest: Uint8Array;
  table: Uint8Array | null;
}

interface Judged {
  piece: Piece;
  verdicts: PieceVerdicts;
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
 * Compares every block from `startBlock` on with the manifest, setting the differing ones
 * in `dirty`. The next READ_AHEAD pieces are being read (on Deno's I/O threads) while this
 * one is judged; with workers, several pieces' hashing is in flight. Flushes the table at
 * the end.
 */
export async function scanPass(options: ScanPassOptions): Promise<ScanPassStats> {
  const { images, identity, manifest, prefilter, dirty, signal } = options;
  const { blockSize, sizeBytes } = identity;
  const blocks = blockCount(identity);
  const perPiece = Math.max(1, Math.floor(SCAN_READ_BYTES / blockSize));
  const pieceBytes = perPiece * blockSize;
  const stats: ScanPassStats = {
    bytesRead: 0,
    holeBytes: 0,
    blocksHashed: 0,
    bytesHashed: 0,
    throttledMs: 0,
  };
  const buffers = Array.from({ length: READ_AHEAD + 1 }, () => new CoreBuffer(pieceBytes));
  // Workers start only once hashing on this thread has become the bulk of the work.
  const hashing: { pool: BlockEntriesPool | null; hashedHere: number } = {
    pool: null,
    hashedHere: 0,
  };
  const spare: ArrayBuffer[] = [];

  // Manifest and table entries are read a group of pieces at a time, one group ahead: two
  // small reads per piece would cost more than the piece's own read.
  const groupBlocks = GROUP_PIECES * perPiece;
  const groups = new Map<number, Promise<[Uint8Array, Uint8Array | null]>>();
  const group = (g: number) => {
    let entries = groups.get(g);
    if (!entries) {
      const first = options.startBlock + g * groupBlocks;
      const count = Math.max(0, Math.min(groupBlocks, blocks - first));
      entries = Promise.all([
        manifest.read(first, count),
        prefilter ? prefilter.table.read(first, count) : null,
      ]);
      entries.catch(() => {});
      groups.set(g, entries);
    }
    return entries;
  };
  const factsOf = async (first: number, count: number) => {
    const g = Math.floor((first - options.startBlock) / groupBlocks);
    groups.delete(g - 1);
    group(g + 1);
    const [manifestEntries, tableEntries] = await group(g);
    const at = first - options.startBlock - g * groupBlocks;
    return [
      manifestEntries.subarray(at * ENTRY_BYTES, (at + count) * ENTRY_BYTES),
      tableEntries?.subarray(at * TABLE_ENTRY_BYTES, (at + count) * TABLE_ENTRY_BYTES) ?? null,
    ] as const;
  };

  const load = async (first: number, buffer: CoreBuffer, image: FileHandle): Promise<Piece> => {
    const count = Math.min(perPiece, blocks - first);
    const length = Math.min(count * blockSize, sizeBytes - first * blockSize);
    const facts = factsOf(first, count);
    facts.catch(() => {});
    const offset = first * blockSize;
    // Holes read as zeros: only the data extents are read (all of it where holes are unknown).
    const extents = image.extents
      ? await io(
        "find the holes of the source image",
        () => image.extents!(offset, length, PIECE_EXTENTS),
      )
      : [];
    const mapped = extents.reduce((n, e) => n + e.length, 0);
    const holes = extents.reduce((n, e) => e.data ? n : n + e.length, 0);
    stats.holeBytes += holes;
    const waitMs = options.limiter.take(length - holes, performance.now());
    if (waitMs > 0) {
      stats.throttledMs += waitMs;
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
    const readAt = async (at: number, into: Uint8Array) => {
      const n = await io("read source image", () => image.read(offset + at, into));
      stats.bytesRead += n;
      return n;
    };
    const n = await buffer.fill(length, async (into) => {
      for (const e of extents) {
        const at = e.offset - offset;
        const part = into.subarray(at, at + e.length);
        if (!e.data) part.fill(0);
        else {
          const got = await readAt(at, part);
          if (got !== part.length) return at + got; // the image ended early
        }
      }
      return mapped + (mapped < length ? await readAt(mapped, into.subarray(mapped)) : 0);
    });
    if (n !== length) {
      throw new PresyncError(
        ErrorCode.IO,
        `source image ended at byte ${offset + n} while scanning (expected ${sizeBytes} bytes)`,
      );
    }
    const [manifestEntries, tableEntries] = await facts;
    return { first, count, length, buffer, manifest: manifestEntries, table: tableEntries };
  };

  // Synchronous up to the hashing hand-off: the piece's buffer is free once this returns.
  const judge = (piece: Piece): Promise<Judged> => {
    const view = piece.buffer.view(piece.length);
    const zero = zeroBlocks(view, blockSize);
    const facts: PieceFacts = {
      count: piece.count,
      zero,
      values: prefilter
        ? prefilterNonZero(prefilter.key, view, zero, piece.count, blockSize)
        : null,
      table: piece.table,
      manifest: piece.manifest,
    };
    const verdicts = judgePiece(facts);
    const judged = { piece, verdicts };
    if (verdicts.toHash.length === 0) return Promise.resolve(judged);
    const parts = runsOf(verdicts.toHash).map(([start, run]) =>
      view.subarray(start * blockSize, (start + run) * blockSize)
    );
    const bytes = parts.reduce((n, part) => n + part.length, 0);
    stats.blocksHashed += verdicts.toHash.length;
    stats.bytesHashed += bytes;
    if (
      !hashing.pool && options.workers > 1 && hashing.hashedHere >= options.hashOnWorkersAfterBytes
    ) {
      hashing.pool = new BlockEntriesPool(options.workers);
    }
    if (!hashing.pool) {
      hashing.hashedHere += bytes;
      settleHashed(
        verdicts,
        facts,
        concatBytes(parts.map((part) => blockEntries(part, blockSize))),
      );
      return Promise.resolve(judged);
    }
    // The blocks to hash, packed into a buffer the worker takes over (no copy on transfer).
    const buffer = spare.pop() ?? new ArrayBuffer(pieceBytes);
    const packed = new Uint8Array(buffer);
    let at = 0;
    for (const part of parts) {
      packed.set(part, at);
      at += part.length;
    }
    return hashing.pool.compute(buffer, bytes, blockSize).then((result) => {
      spare.push(result.buffer);
      settleHashed(verdicts, facts, result.entries);
      return judged;
    });
  };

  const settle = async ({ piece, verdicts }: Judged) => {
    for (const block of verdicts.dirty) dirty.set(piece.first + block);
    if (verdicts.table) prefilter!.table.stage(piece.first, verdicts.table);
    if (prefilter && prefilter.table.stagedBytes >= TABLE_FLUSH_BYTES) {
      await prefilter.table.flush();
    }
    await options.afterPiece?.(piece.first + piece.count, piece.length);
  };

  const inFlight: Promise<Judged>[] = [];
  // Reads queued on the image's handles run back to back, so no reader waits for this thread
  // to judge a piece before it starts the next read.
  const loading: Promise<Piece>[] = [];
  let nextFirst = options.startBlock;
  let reads = 0;
  const readAhead = (buffer: CoreBuffer) => {
    if (nextFirst >= blocks) return;
    const piece = load(nextFirst, buffer, images[reads++ % images.length]);
    piece.catch(() => {});
    loading.push(piece);
    nextFirst += perPiece;
  };
  try {
    for (const buffer of buffers.slice(0, READ_AHEAD)) readAhead(buffer);
    let idle = buffers[READ_AHEAD];
    while (loading.length > 0) {
      const piece: Piece = await loading.shift()!;
      signal?.throwIfAborted();
      readAhead(idle);
      idle = piece.buffer;
      const judged = judge(piece);
      judged.catch(() => {});
      inFlight.push(judged);
      // Without workers a piece is settled at once; with them, two pieces per worker are in
      // flight so that no worker waits while this thread reads and judges.
      if (inFlight.length > 2 * (hashing.pool?.parallelism ?? 0)) {
        await settle(await inFlight.shift()!);
      }
    }
    while (inFlight.length > 0) await settle(await inFlight.shift()!);
    await prefilter?.table.flush();
    return stats;
  } catch (err) {
    await Promise.allSettled([...loading, ...inFlight]);
    // What was settled before a cut stopped this pass is good work: keep it.
    if (signal?.aborted) await prefilter?.table.flush();
    throw err;
  } finally {
    hashing.pool?.close();
    for (const buffer of buffers) buffer.free();
  }
}
