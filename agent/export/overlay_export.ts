import { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { atomicWrite, readWhole } from "../fs/atomic_write.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { FileLock } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { PositionalFile } from "../nbd/_positional_file.ts";
import { fileAllocation, zeroFileRange, type ZeroOptions } from "../nbd/file_holes.ts";
import type { NbdExport } from "../nbd/nbd_export.ts";
import type { StatusExtent } from "../nbd/reply_codec.ts";

/** Most extents one {@linkcode OverlayExport.allocation} answer holds. */
const MAX_STATUS_EXTENTS = 1024;

/** Options of {@linkcode OverlayExport.open}. */
export interface OverlayExportOptions {
  /** The read-only export underneath (the replica); never written. */
  base: NbdExport;
  /** Granularity of the overlay, bytes (the volume's block size). */
  blockSize: number;
  /**
   * The overlay data file (sparse, the size of the volume). Its map of present blocks is
   * `<overlayPath>.map`. An existing overlay is continued, so a rebooted VM keeps its writes.
   */
  overlayPath: string;
  /**
   * Which generation the base is. Recorded with a new overlay (`<overlayPath>.base`) and
   * checked when one is continued: an overlay's blocks are copied up from, and only make
   * sense over, the generation they were written on.
   */
  baseGeneration?: OverlayBase;
}

/** The generation an overlay was written over (`<overlayPath>.base`, JSON). */
export interface OverlayBase {
  generation: number;
  /** Its Merkle root (hex), when known (not yet for a postcopy export's generation). */
  merkleRoot: string | null;
}

/**
 * A writable copy-on-write view of a read-only export: writes go to an overlay file, block
 * by block (a partial write first copies the block up from the base); reads take each block
 * from the overlay when it has it, else from the base. The base is never written. FLUSH
 * fsyncs the overlay, then records the map of present blocks atomically, so after a crash
 * the overlay holds every write acknowledged before the last flush. WRITE_ZEROES punches
 * holes in the overlay (the blocks become present, reading as zeros, costing no space);
 * BLOCK_STATUS combines the overlay's holes for present blocks with the base's status for
 * the rest.
 */
export class OverlayExport implements NbdExport {
  readonly name: string;
  readonly description: string;
  readonly sizeBytes: number;
  readonly readOnly = false;
  readonly multiConn = true;
  readonly #base: NbdExport;
  readonly #blockSize: number;
  readonly #file: PositionalFile;
  readonly #mapPath: string;
  readonly #present: Bitmap;
  readonly #lock: FileLock;
  #writes: Promise<unknown> = Promise.resolve();
  #mapDirty = false;
  #closed = false;

  private constructor(
    options: OverlayExportOptions,
    file: PositionalFile,
    present: Bitmap,
    lock: FileLock,
  ) {
    this.#base = options.base;
    this.#lock = lock;
    this.#blockSize = options.blockSize;
    this.#file = file;
    this.#mapPath = `${options.overlayPath}.map`;
    this.#present = present;
    this.name = options.base.name;
    this.sizeBytes = options.base.sizeBytes;
    this.description = `${options.base.description ?? options.base.name}, writable overlay ` +
      options.overlayPath;
  }

  /**
   * Opens (or creates) the overlay, holding it exclusively (`flock`) until `close`: one
   * writer at a time, so a fail-back never reads an overlay a running VM still writes.
   *
   * @throws {PresyncError} `STORE_BUSY` when another export or a fail-back holds it,
   *   `STORE_CORRUPT` (damaged map or base record), `VOLUME_MISMATCH` (map of another
   *   size), `OVERLAY_STALE` (written over another generation than the base), `IO`
   */
  static async open(options: OverlayExportOptions): Promise<OverlayExport> {
    const blocks = Math.ceil(options.base.sizeBytes / options.blockSize);
    const fs = new DenoFileSystem();
    const saved = await io(
      `read ${options.overlayPath}.map`,
      () => readWhole(fs, `${options.overlayPath}.map`),
    );
    let present: Bitmap;
    try {
      present = saved ? Bitmap.deserialize(saved, blocks) : new Bitmap(blocks);
    } catch (cause) {
      throw new PresyncError(
        ErrorCode.STORE_CORRUPT,
        `${options.overlayPath}.map is damaged; remove the overlay and its map to start over`,
        { cause },
      );
    }
    if (present.size !== blocks) {
      present.free();
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `overlay ${options.overlayPath} belongs to a volume of another size`,
      );
    }
    const file = await PositionalFile.open(options.overlayPath, { create: true });
    let lock: FileLock | null = null;
    try {
      lock = await io(
        `lock ${options.overlayPath}`,
        () => fs.tryLock(options.overlayPath, "exclusive"),
      );
      if (!lock) {
        throw new PresyncError(
          ErrorCode.STORE_BUSY,
          `overlay ${options.overlayPath} is in use (a running export or a fail-back holds it): ` +
            `stop the VM and its export first`,
          { retryable: true },
        );
      }
      if (options.baseGeneration) await checkBase(fs, options);
      if (await file.size() !== options.base.sizeBytes) {
        await file.truncate(options.base.sizeBytes);
      }
    } catch (err) {
      lock?.release();
      present.free();
      await file.close();
      throw err;
    }
    return new OverlayExport(options, file, present, lock);
  }

  /** The blocks held in the overlay (a copy; the caller frees it). */
  presentMap(): Bitmap {
    return this.#present.clone();
  }

  /** Number of blocks held in the overlay. */
  presentBlocks(): number {
    return this.#present.popcount();
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const data = await this.#base.read(offset, length);
    if (length === 0) return data;
    const bs = this.#blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    for (let block = first; block <= last; block++) {
      if (!this.#present.get(block)) continue;
      const from = Math.max(offset, block * bs);
      const to = Math.min(offset + length, (block + 1) * bs);
      await this.#file.read(from, data.subarray(from - offset, to - offset));
    }
    return data;
  }

  /** Writes run one at a time: a copy-up must not race another write to the same block. */
  #serial(fn: () => Promise<void>): Promise<void> {
    const next = this.#writes.then(fn);
    this.#writes = next.catch(() => {});
    return next;
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      if (data.length === 0) return;
      await this.#copyUpEdges(offset, data.length);
      await this.#file.write(offset, data);
      this.#markPresent(offset, data.length);
    });
  }

  /** Copies up from the base the first and last blocks a change covers only partly. */
  async #copyUpEdges(offset: number, length: number): Promise<void> {
    const bs = this.#blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    for (const block of new Set([first, last])) {
      const start = block * bs;
      const end = Math.min(start + bs, this.sizeBytes);
      const covered = offset <= start && offset + length >= end;
      if (!covered && !this.#present.get(block)) {
        await this.#file.write(start, await this.#base.read(start, end - start));
      }
    }
  }

  #markPresent(offset: number, length: number): void {
    const bs = this.#blockSize;
    const first = Math.floor(offset / bs);
    this.#present.setRange(first, Math.floor((offset + length - 1) / bs) - first + 1);
    this.#mapDirty = true;
  }

  /** The blocks become present and read as zeros: a hole in the overlay where it can punch. */
  writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    return this.#serial(async () => {
      if (length === 0) return;
      await this.#copyUpEdges(offset, length);
      await zeroFileRange(this.#file, offset, length, options);
      this.#markPresent(offset, length);
    });
  }

  /**
   * Frees the overlay's space for the whole blocks inside the range (present ones then read
   * as zeros; absent ones still read from the base, which the specification allows).
   */
  trim(offset: number, length: number): Promise<void> {
    return this.#serial(async () => {
      const bs = this.#blockSize;
      const start = Math.ceil(offset / bs) * bs;
      const end = Math.min(Math.floor((offset + length) / bs) * bs, this.sizeBytes);
      if (end > start) await this.#file.punchHole(start, end - start);
    });
  }

  flush(): Promise<void> {
    return this.#serial(async () => {
      await this.#file.sync();
      if (!this.#mapDirty) return;
      this.#mapDirty = false;
      await io(
        `write ${this.#mapPath}`,
        () => atomicWrite(new DenoFileSystem(), this.#mapPath, this.#present.serialize()),
      );
    });
  }

  /**
   * Status from the overlay file's holes over runs of present blocks and from the base over
   * runs of absent ones, adjacent extents of equal flags merged; up to
   * {@linkcode MAX_STATUS_EXTENTS} extents (fewer than the range, as the specification
   * allows, when the base answers short or the limit is reached).
   */
  async allocation(offset: number, length: number): Promise<StatusExtent[]> {
    const bs = this.#blockSize;
    const end = Math.min(offset + length, this.sizeBytes);
    const out: StatusExtent[] = [];
    const push = (e: StatusExtent) => {
      const prev = out[out.length - 1];
      if (prev && prev.flags === e.flags) prev.lengthBytes += e.lengthBytes;
      else out.push({ ...e });
    };
    for (let at = offset; at < end && out.length < MAX_STATUS_EXTENTS;) {
      const present = this.#present.get(Math.floor(at / bs));
      let next = Math.floor(at / bs) + 1;
      while (next * bs < end && this.#present.get(next) === present) next++;
      const span = Math.min(next * bs, end) - at;
      const parts = present
        ? await fileAllocation(this.#file, at, span)
        : this.#base.allocation
        ? await this.#base.allocation(at, span)
        : [{ lengthBytes: span, flags: 0 }];
      let covered = 0;
      for (const e of parts) {
        if (covered >= span) break;
        const piece = Math.min(e.lengthBytes, span - covered);
        if (piece <= 0) continue;
        push({ lengthBytes: piece, flags: e.flags });
        covered += piece;
      }
      if (covered < span) break;
      at += span;
    }
    if (out.length === 0) out.push({ lengthBytes: end - offset, flags: 0 });
    return out;
  }

  /** Flushes, then closes the overlay (the base is the caller's). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.flush();
    } finally {
      await this.#file.close();
      this.#lock.release();
      this.#present.free();
    }
  }
}

/**
 * Records the base generation of a new overlay, or checks a continued one's: an overlay
 * from before base records were kept (a map, no record) is taken as written over this base.
 */
async function checkBase(fs: DenoFileSystem, options: OverlayExportOptions): Promise<void> {
  const path = `${options.overlayPath}.base`;
  const want = options.baseGeneration!;
  const saved = await io(`read ${path}`, () => readWhole(fs, path));
  if (saved === null) {
    const record = new TextEncoder().encode(JSON.stringify(want));
    await io(`write ${path}`, () => atomicWrite(fs, path, record));
    return;
  }
  let had: OverlayBase;
  try {
    had = JSON.parse(new TextDecoder().decode(saved));
    if (!Number.isSafeInteger(had.generation)) throw new Error("no generation");
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `${path} is damaged; remove the overlay, its .map and its .base to start over`,
      { cause },
    );
  }
  const rootsDiffer = had.merkleRoot !== null && want.merkleRoot !== null &&
    had.merkleRoot !== want.merkleRoot;
  if (had.generation !== want.generation || rootsDiffer) {
    const what = had.generation !== want.generation
      ? `generation ${had.generation}, and the replica is now at generation ${want.generation}`
      : `generation ${had.generation} with Merkle root ${had.merkleRoot}, and the replica's ` +
        `generation ${want.generation} has root ${want.merkleRoot} (rolled back and synced again)`;
    throw new PresyncError(
      ErrorCode.OVERLAY_STALE,
      `overlay ${options.overlayPath} was written over ${what}: ` +
        `its blocks over this generation would mix two disks. Move the overlay, its .map and ` +
        `its .base away to start a new one (to reach its data, if generation ` +
        `${had.generation} is kept: presync export --generation ${had.generation} --writable ` +
        `--overlay ${options.overlayPath})`,
    );
  }
}
