import { Bitmap, BlockEntriesPool, diffManifests, type PoolResult } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { atomicWrite, readWhole } from "../../agent/fs/atomic_write.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import type { FileHandle, FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import { RateLimiter, throttle } from "../../agent/rate_limiter.ts";
import type { Cut, Tracker } from "../../agent/tracker.ts";
import type { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { blockCount, reseedHint, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";

/** Images at least this large are hashed on every core (workers cost ~0.1 s to start). */
export const PARALLEL_SCAN_MIN_BYTES = 256 * 1024 * 1024;

/** Bytes read per sequential read while scanning (or one block when blocks are larger). */
export const SCAN_READ_BYTES = 8 * 1024 * 1024;

/** Options of {@linkcode ScanTracker}. */
export interface ScanTrackerOptions {
  /** The source image file. */
  imagePath: string;
  identity: VolumeIdentity;
  /** The baseline: block hashes the destination has (or will have). Not closed here. */
  manifest: ManifestFile;
  /**
   * Which baseline `manifest` is (the committed generation it reflects). A saved scan
   * checkpoint is used only for the same baseline.
   */
  baselineGeneration: number;
  /** Where scan progress is saved so a killed scan resumes; none when absent. */
  checkpointPath?: string;
  /** Save progress after this many bytes scanned. Default 1 GiB. */
  checkpointEveryBytes?: number;
  /** Hashing workers (default: one per core for images of PARALLEL_SCAN_MIN_BYTES or more). */
  workers?: number;
  /** Read-rate cap on the image, bytes per second; 0 or absent: unlimited. */
  readRateBytesPerSecond?: number;
  fs?: FileSystem;
}

/**
 * The tracker that needs no help from the hypervisor: each cut re-reads the whole image in
 * large sequential reads, hashes its blocks in WASM batches (all-zero blocks are recognised
 * and not hashed) and compares them with the baseline manifest. Reads return current
 * bytes, so its generations are fuzzy when the VM writes during a sync.
 */
export class ScanTracker implements Tracker {
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly #options: ScanTrackerOptions;
  readonly #fs: FileSystem;
  readonly #limiter: RateLimiter;

  constructor(options: ScanTrackerOptions) {
    this.#options = options;
    this.#fs = options.fs ?? new DenoFileSystem();
    this.sizeBytes = options.identity.sizeBytes;
    this.blockSize = options.identity.blockSize;
    this.#limiter = new RateLimiter(
      options.readRateBytesPerSecond ?? 0,
      Math.max(SCAN_READ_BYTES, this.blockSize),
      performance.now(),
    );
  }

  async #openImage(): Promise<FileHandle> {
    const { imagePath, identity } = this.#options;
    const image = await io(`open source image ${imagePath}`, () => this.#fs.open(imagePath));
    const size = await image.size();
    if (size !== identity.sizeBytes) {
      image.close();
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `source image ${imagePath} is now ${size} bytes but volume \`${identity.name}\` was ` +
          `initialised at ${identity.sizeBytes} bytes; ${reseedHint(identity.name)}`,
      );
    }
    return image;
  }

  async cut(): Promise<Cut> {
    const image = await this.#openImage();
    try {
      const dirty = await this.#scan(image);
      return new ScanCut(image, dirty, this.#options.identity);
    } catch (err) {
      image.close();
      throw err;
    }
  }

  async resume(dirty: Bitmap): Promise<Cut> {
    return new ScanCut(await this.#openImage(), dirty.clone(), this.#options.identity);
  }

  async #scan(image: FileHandle): Promise<Bitmap> {
    const { identity, manifest, checkpointPath } = this.#options;
    const blocks = blockCount(identity);
    const perPiece = Math.max(1, Math.floor(SCAN_READ_BYTES / identity.blockSize));
    const pieceBytes = perPiece * identity.blockSize;
    const readPiece = async (first: number, buffer: ArrayBuffer) => {
      const count = Math.min(perPiece, blocks - first);
      const length = Math.min(
        count * identity.blockSize,
        identity.sizeBytes - first * identity.blockSize,
      );
      await throttle(this.#limiter, length);
      const data = new Uint8Array(buffer, 0, length);
      const n = await io("read source image", () => image.read(first * identity.blockSize, data));
      if (n !== length) {
        throw new PresyncError(
          ErrorCode.IO,
          `source image ended at byte ${first * identity.blockSize + n} while scanning`,
        );
      }
      return { first, count, buffer, length };
    };
    const restored = checkpointPath ? await this.#loadCheckpoint(blocks) : null;
    const dirty = restored?.dirty ?? new Bitmap(blocks);
    // Large images are hashed on every core; the next piece is read (on Deno's I/O thread)
    // while earlier ones are hashed.
    const workers = this.#options.workers ??
      (identity.sizeBytes >= PARALLEL_SCAN_MIN_BYTES ? navigator.hardwareConcurrency : 1);
    using pool = new BlockEntriesPool(workers);
    const free: ArrayBuffer[] = [];
    const inFlight: Promise<{ first: number; count: number; length: number } & PoolResult>[] = [];
    let nextRead: ReturnType<typeof readPiece> | null = null;
    let sinceCheckpoint = 0;
    const settle = async (piece: { first: number; count: number; length: number } & PoolResult) => {
      using changed = diffManifests(await manifest.read(piece.first, piece.count), piece.entries);
      for (const [start, run] of changed.extents()) dirty.setRange(piece.first + start, run);
      free.push(piece.buffer);
      sinceCheckpoint += piece.length;
      if (checkpointPath && sinceCheckpoint >= (this.#options.checkpointEveryBytes ?? 2 ** 30)) {
        // Pieces finish in order, so every block before this piece's end is compared.
        await this.#saveCheckpoint(dirty, piece.first + piece.count);
        sinceCheckpoint = 0;
      }
    };
    try {
      const start = restored?.nextBlock ?? 0;
      nextRead = start < blocks ? readPiece(start, new ArrayBuffer(pieceBytes)) : null;
      for (let first = start; first < blocks; first += perPiece) {
        const piece = await nextRead!;
        nextRead = first + perPiece < blocks
          ? readPiece(first + perPiece, free.pop() ?? new ArrayBuffer(pieceBytes))
          : null;
        const computing = pool.compute(piece.buffer, piece.length, identity.blockSize)
          .then((result) => ({ ...piece, ...result }));
        computing.catch(() => {});
        inFlight.push(computing);
        if (inFlight.length >= pool.parallelism) await settle(await inFlight.shift()!);
      }
      while (inFlight.length > 0) await settle(await inFlight.shift()!);
      if (checkpointPath) await io("remove scan checkpoint", () => this.#fs.remove(checkpointPath));
      return dirty;
    } catch (err) {
      await nextRead?.catch(() => {});
      await Promise.allSettled(inFlight);
      dirty.free();
      throw err;
    }
  }

  async #saveCheckpoint(dirty: Bitmap, nextBlock: number): Promise<void> {
    const header = new TextEncoder().encode(
      JSON.stringify({
        uuid: this.#options.identity.uuid,
        baseline: this.#options.baselineGeneration,
        nextBlock,
      }),
    );
    const bits = dirty.serialize();
    const bytes = new Uint8Array(4 + header.length + bits.length);
    new DataView(bytes.buffer).setUint32(0, header.length, true);
    bytes.set(header, 4);
    bytes.set(bits, 4 + header.length);
    await io(
      "save scan checkpoint",
      () => atomicWrite(this.#fs, this.#options.checkpointPath!, bytes),
    );
  }

  /** The saved progress of an interrupted scan of the same baseline, or null. */
  async #loadCheckpoint(blocks: number): Promise<{ dirty: Bitmap; nextBlock: number } | null> {
    const bytes = await readWhole(this.#fs, this.#options.checkpointPath!);
    if (!bytes || bytes.length < 4) return null;
    try {
      const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
      const header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + headerLength)));
      if (
        header.uuid !== this.#options.identity.uuid ||
        header.baseline !== this.#options.baselineGeneration ||
        !Number.isSafeInteger(header.nextBlock) || header.nextBlock > blocks
      ) {
        return null;
      }
      return {
        dirty: Bitmap.deserialize(bytes.subarray(4 + headerLength), blocks),
        nextBlock: header.nextBlock,
      };
    } catch {
      // A damaged checkpoint only costs a full scan.
      return null;
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

class ScanCut implements Cut {
  readonly dirty: Bitmap;
  readonly pointInTime = false;
  readonly #image: FileHandle;
  readonly #identity: VolumeIdentity;

  constructor(image: FileHandle, dirty: Bitmap, identity: VolumeIdentity) {
    this.#image = image;
    this.dirty = dirty;
    this.#identity = identity;
  }

  async read(first: number, count: number): Promise<Uint8Array> {
    const { blockSize, sizeBytes } = this.#identity;
    const length = Math.min(count * blockSize, sizeBytes - first * blockSize);
    const data = new Uint8Array(length);
    const n = await io("read source image", () => this.#image.read(first * blockSize, data));
    if (n !== length) {
      throw new PresyncError(ErrorCode.IO, `source image ended at byte ${first * blockSize + n}`);
    }
    return data;
  }

  release(): Promise<void> {
    this.#image.close();
    this.dirty.free();
    return Promise.resolve();
  }
}
