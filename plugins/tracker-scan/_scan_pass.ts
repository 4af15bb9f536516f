// One pass of the scan tracker over the whole image: large positional reads into WASM memory
// (never copied), zero detection and pre-filter values in place, BLAKE3 only for the blocks
// the pre-filter cannot vouch for, and the comparison with the baseline manifest. The reading
// and examining run on this thread or on scan workers; this thread plans the pieces (holes,
// read-rate cap, manifest and table entries) and settles their verdicts in block order.

import { type Bitmap, CoreBuffer, type PrefilterKey } from "../../agent/core/mod.ts";
import type { FileHandle } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import type { RateLimiter } from "../../agent/rate_limiter.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import type { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { blockCount, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import {
  type Examined,
  examinePiece,
  type PieceExtent,
  type PiecePlan,
  readPiece,
} from "./_piece_examine.ts";
import type { ScanWorkers } from "./_scan_workers.ts";
import { type PrefilterTable, TABLE_ENTRY_BYTES, TABLE_FLUSH_BYTES } from "./prefilter_table.ts";

/** Bytes read per positional read while scanning (or one block when blocks are larger). */
export const SCAN_READ_BYTES = 2 * 1024 * 1024;
/** Pieces read or examined at once on this thread (reads run on Deno's I/O threads). */
const IN_FLIGHT_HERE = 3;
/** Batches in flight per scan worker: the next one waits in its queue while it reads one. */
const IN_FLIGHT_PER_WORKER = 2;
/**
 * Pieces sent to a scan worker at once: a message to a worker and its answer cost ~0.1 ms of
 * CPU (0.05 CPU-s per GiB with one 2 MiB piece each), so they go four at a time.
 */
const PIECES_PER_BATCH = 4;
/** Pieces whose manifest and table entries are read at once. */
const GROUP_PIECES = 16;
/** Extents asked for per piece; a piece more fragmented than that reads its rest whole. */
const PIECE_EXTENTS = 64;

/** What {@linkcode scanPass} works on. */
export interface ScanPassOptions {
  /**
   * Handles on the image: the holes are asked of the first; pieces read on this thread are
   * read through them in turn.
   */
  images: FileHandle[];
  identity: VolumeIdentity;
  manifest: ManifestFile;
  limiter: RateLimiter;
  /**
   * Scan workers, each opening the image at `path` itself for the pass and reading and
   * examining every n-th piece; null: everything on this thread.
   */
  workers: { pool: ScanWorkers; path: string } | null;
  /** The key (and its secret, for the workers) and the table; null: every non-zero block is hashed. */
  prefilter: { key: PrefilterKey; secret: Uint8Array; table: PrefilterTable } | null;
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

/**
 * Compares every block from `startBlock` on with the manifest, setting the differing ones
 * in `dirty`. Several pieces are read and examined at once (on Deno's I/O threads and this
 * one, or on the scan workers) while this thread plans the next; verdicts are settled in
 * block order. Flushes the table at the end.
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

  const plan = async (first: number): Promise<PiecePlan> => {
    const count = Math.min(perPiece, blocks - first);
    const offset = first * blockSize;
    const length = Math.min(count * blockSize, sizeBytes - offset);
    const facts = factsOf(first, count);
    facts.catch(() => {});
    // Holes read as zeros: only the data extents are read (all of it where holes are unknown).
    const image = images[0];
    const found = image.extents
      ? await io(
        "find the holes of the source image",
        () => image.extents!(offset, length, PIECE_EXTENTS),
      )
      : [];
    const extents: PieceExtent[] = found.map((e) => ({
      at: e.offset - offset,
      length: e.length,
      data: e.data,
    }));
    const mapped = found.reduce((n, e) => n + e.length, 0);
    if (mapped < length) extents.push({ at: mapped, length: length - mapped, data: true });
    const holes = found.reduce((n, e) => e.data ? n : n + e.length, 0);
    stats.holeBytes += holes;
    const waitMs = options.limiter.take(length - holes, performance.now());
    if (waitMs > 0) {
      stats.throttledMs += waitMs;
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
    const [manifestEntries, tableEntries] = await facts;
    return {
      first,
      count,
      offset,
      length,
      extents,
      manifest: manifestEntries,
      table: tableEntries,
    };
  };

  const workers = options.workers?.pool ?? null;
  workers?.begin({
    path: options.workers!.path,
    sizeBytes,
    blockSize,
    pieceBytes,
    secret: prefilter?.secret ?? null,
  });
  const buffers = workers
    ? []
    : Array.from({ length: IN_FLIGHT_HERE }, () => new CoreBuffer(pieceBytes));
  const examineHere = async (k: number, [piece]: PiecePlan[]): Promise<Examined[]> => {
    const buffer = buffers.pop()!;
    try {
      const image = images[k % images.length];
      const bytesRead = await buffer.fill(piece.length, (into) =>
        readPiece(
          piece,
          into,
          sizeBytes,
          (position, part) => io("read source image", () => image.read(position, part)),
        ));
      const view = buffer.view(piece.length);
      return [{ ...examinePiece(piece, view, blockSize, prefilter?.key ?? null), bytesRead }];
    } finally {
      buffers.push(buffer);
    }
  };
  const examine = workers
    ? (k: number, pieces: PiecePlan[]) => workers.examine(k, pieces)
    : examineHere;
  const inFlightMax = workers ? IN_FLIGHT_PER_WORKER * workers.size : IN_FLIGHT_HERE;
  const perBatch = workers ? PIECES_PER_BATCH : 1;

  const settleOne = async (piece: PiecePlan, examined: Examined) => {
    // A stopped pass settles nothing more, whatever its pieces in flight found.
    signal?.throwIfAborted();
    stats.bytesRead += examined.bytesRead;
    stats.blocksHashed += examined.blocksHashed;
    stats.bytesHashed += examined.bytesHashed;
    for (const block of examined.dirty) dirty.set(piece.first + block);
    if (examined.table) prefilter!.table.stage(piece.first, examined.table);
    if (prefilter && prefilter.table.stagedBytes >= TABLE_FLUSH_BYTES) {
      await prefilter.table.flush();
    }
    await options.afterPiece?.(piece.first + piece.count, piece.length);
  };
  const settle = async ([pieces, examined]: [PiecePlan[], Examined[]]) => {
    for (const [i, piece] of pieces.entries()) await settleOne(piece, examined[i]);
  };

  const inFlight: Promise<[PiecePlan[], Examined[]]>[] = [];
  let batch: PiecePlan[] = [];
  let batches = 0;
  const send = () => {
    const pieces = batch;
    batch = [];
    const examined = examine(batches++, pieces).then((
      result,
    ) => [pieces, result] as [PiecePlan[], Examined[]]);
    examined.catch(() => {});
    inFlight.push(examined);
  };
  try {
    for (let first = options.startBlock; first < blocks; first += perPiece) {
      signal?.throwIfAborted();
      batch.push(await plan(first));
      if (batch.length < perBatch && first + perPiece < blocks) continue;
      send();
      if (inFlight.length >= inFlightMax) await settle(await inFlight.shift()!);
    }
    while (inFlight.length > 0) await settle(await inFlight.shift()!);
    await prefilter?.table.flush();
    return stats;
  } catch (err) {
    await Promise.allSettled(inFlight);
    // What was settled before a cut stopped this pass is good work: keep it.
    if (signal?.aborted) await prefilter?.table.flush();
    throw err;
  } finally {
    workers?.end();
    for (const buffer of buffers) buffer.free();
  }
}
