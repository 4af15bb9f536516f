import { Bitmap, isZero } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { atomicWrite, readWhole } from "../../agent/fs/atomic_write.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import {
  fileAllocation,
  type FileExtent,
  type NbdAddress,
  type NbdExport,
  NbdServer,
  PositionalFile,
  type StatusExtent,
  zeroFileRange,
  type ZeroOptions,
} from "../../agent/nbd/mod.ts";
import type { Cut, TrackedChanges, Tracker } from "../../agent/tracker.ts";
import { PageMasks, pageMasksSupported } from "../../agent/volume/page_masks.ts";
import { blockCount, reseedHint, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import type { DirtyMirror } from "./dirty_mirror.ts";
import { NbdCut } from "./nbd_cut.ts";
import { DEFAULT_PRESERVE_MEMORY_BYTES, PreservedBlocks } from "./preserved_blocks.ts";

/** Above this many blocks, a write's newly marked blocks are counted by a popcount. */
const COUNT_BY_POPCOUNT_BLOCKS = 4096;

/** File in the state directory holding the live dirty set across a clean restart. */
export const LIVE_DIRTY_FILE = "nbd-live.dirty";

/** Options of {@linkcode createNbdTracker}. */
export interface NbdTrackerOptions {
  /** The VM's disk image (raw). Its size must equal `identity.sizeBytes`. */
  imagePath: string;
  /** The volume; its name is the NBD export name. */
  identity: VolumeIdentity;
  /**
   * A directory of the source agent for this volume: spill files of preserved blocks
   * (`cbw-<n>.spill`) and, after a clean close, the live dirty set (`nbd-live.dirty`).
   */
  stateDir: string;
  /** Where to serve the disk (none: serve {@linkcode NbdTracker.export} yourself). */
  listen?: NbdAddress[];
  /**
   * Blocks changed before tracking started (copied). Default: the set saved by the last
   * clean `close()` when there is one, else every block — after a crash nobody knows what
   * the VM wrote, so pass the scan tracker's diff against the manifest to avoid a full send.
   */
  initialDirty?: Bitmap;
  /** Memory for preserved (copy-before-write) blocks before they spill to disk. 64 MiB. */
  preserveMemoryBytes?: number;
  /** Errors that ended an NBD connection. */
  onError?: (err: unknown) => void;
  /**
   * Most blocks per generation whose changed 4 KiB pages are kept (page masks); past it a
   * newly written block counts as whole. Default `DEFAULT_MAX_MASKS` (about 64 MiB at most).
   */
  maxPageMasks?: number;
  /**
   * Kept equal to the live set as writes mark blocks and cuts swap it, for another thread to
   * read (the worker's main thread: {@linkcode WorkerNbdTracker}).
   */
  mirror?: DirtyMirror;
}

/**
 * The NBD tracker: presync is the NBD server the VM's disk is attached to (like xNBD).
 * Every WRITE, WRITE_ZEROES and TRIM marks its blocks in a live bitmap (one WASM range fill,
 * O(1) per block); FLUSH fsyncs the image before it is answered. `cut()` waits for the
 * writes in flight (local disk only), swaps the live bitmap for a fresh one and returns a
 * point-in-time cut: while the cut is unreleased, a write to one of its blocks first copies
 * the block's old content aside (memory, then a spill file), and `Cut.read` returns the
 * content as of the cut. The VM never waits for the network: the sender reads through its
 * own file handle, and the write path touches only the local image and spill file.
 */
export class NbdTracker implements Tracker {
  readonly sizeBytes: number;
  readonly blockSize: number;
  /** The export the VM's disk is served as (name = volume name). */
  readonly export: NbdExport;
  /** Where the server listens (the bound addresses). */
  readonly addresses: NbdAddress[] = [];
  readonly #options: NbdTrackerOptions;
  readonly #image: PositionalFile;
  #live: Bitmap;
  /** The changed pages of the live set's blocks (null: block size without page masks). */
  #pages: PageMasks | null;
  readonly #cuts = new Set<NbdCut>();
  #server: NbdServer | null = null;
  #inflight = 0;
  #drained: (() => void) | null = null;
  #gate: Promise<void> | null = null;
  #cutSerial: Promise<unknown> = Promise.resolve();
  #cutNumber = 0;
  #closed = false;
  /** `#live.popcount()`, kept as writes mark blocks (status asks for it often). */
  #liveCount: number;

  private constructor(options: NbdTrackerOptions, image: PositionalFile, live: Bitmap) {
    this.#options = options;
    this.#image = image;
    this.#live = live;
    this.#pages = this.#newPageMasks();
    this.#liveCount = live.popcount();
    options.mirror?.replace(live, this.#livePages());
    this.sizeBytes = options.identity.sizeBytes;
    this.blockSize = options.identity.blockSize;
    this.export = new TrackingExport(this, options.identity.name);
  }

  /** Opens the image, restores or assumes the dirty set, and starts serving. */
  static async create(options: NbdTrackerOptions): Promise<NbdTracker> {
    const { identity, imagePath, stateDir } = options;
    const image = await PositionalFile.open(imagePath);
    let tracker: NbdTracker | null = null;
    try {
      const size = await image.size();
      if (size !== identity.sizeBytes) {
        throw new PresyncError(
          ErrorCode.VOLUME_MISMATCH,
          `source image ${imagePath} is ${size} bytes but volume \`${identity.name}\` was ` +
            `initialised at ${identity.sizeBytes} bytes; ${reseedHint(identity.name)}`,
        );
      }
      await io(`create ${stateDir}`, () => Deno.mkdir(stateDir, { recursive: true }));
      const live = await initialLive(options);
      tracker = new NbdTracker(options, image, live);
      if (options.listen?.length) {
        const server = new NbdServer([tracker.export], { onError: options.onError });
        tracker.#server = server;
        for (const address of options.listen) tracker.addresses.push(await server.listen(address));
      }
      return tracker;
    } catch (err) {
      if (tracker) await tracker.close();
      else await image.close();
      throw err;
    }
  }

  #newPageMasks(): PageMasks | null {
    const { blockSize } = this.#options.identity;
    return pageMasksSupported(blockSize)
      ? new PageMasks(blockSize, this.#options.maxPageMasks)
      : null;
  }

  /** Number of blocks marked since the last cut. */
  dirtyCount(): number {
    return this.#liveCount;
  }

  /** Exactly the live set: every write so far since the last cut. */
  changesNow(): TrackedChanges {
    const pages = this.#livePages();
    return {
      blocks: this.#live.clone(),
      asOfMs: Date.now(),
      exact: true,
      newBlocksPerSecond: 0,
      rewritesPerSecond: 0,
      lastCutOutside: 0,
      ...(pages >= 0 ? { pages } : {}),
    };
  }

  /** The changed pages of the live set (−1: no page masks at this block size). */
  #livePages(): number {
    return this.#pages?.changedPages(this.#liveCount) ?? -1;
  }

  /** Cuts currently unreleased (being sent). */
  get activeCuts(): number {
    return this.#cuts.size;
  }

  /** Bytes of preserved old block contents held for unreleased cuts (memory + spill). */
  preservedBytes(): { memory: number; spilled: number } {
    let memory = 0, spilled = 0;
    for (const cut of this.#cuts) {
      memory += cut.preserved.memoryBytes;
      spilled += cut.preserved.spilledBytes;
    }
    return { memory, spilled };
  }

  // --- the write path (called by the export) ---

  /** Waits while a cut swaps bitmaps, then counts the caller as a write in flight. */
  async enterWrite(): Promise<void> {
    while (this.#gate) await this.#gate;
    if (this.#closed) {
      throw new PresyncError(ErrorCode.IO, `volume ${this.#options.identity.name} is closed`);
    }
    this.#inflight++;
  }

  leaveWrite(): void {
    if (--this.#inflight === 0) this.#drained?.();
  }

  /**
   * Before bytes `[offset, offset+length)` change: preserves the old content of blocks that
   * unreleased cuts still need, then marks the blocks dirty (and their changed pages). Call
   * between enter and leave.
   */
  async beforeChange(offset: number, length: number, preserve: boolean): Promise<void> {
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + length - 1) / this.blockSize);
    if (preserve) {
      for (const cut of this.#cuts) await this.#preserve(cut, first, last);
    }
    this.#pages?.mark(this.#live, offset, length);
    const count = last - first + 1;
    if (count > COUNT_BY_POPCOUNT_BLOCKS) {
      // A large TRIM or WRITE_ZEROES: one popcount is cheaper than testing every block.
      this.#live.setRange(first, count);
      this.#liveCount = this.#live.popcount();
    } else {
      let added = 0;
      for (let block = first; block <= last; block++) if (!this.#live.get(block)) added++;
      this.#live.setRange(first, count);
      this.#liveCount += added;
    }
    this.#options.mirror?.mark(first, count, this.#liveCount, this.#livePages());
  }

  /**
   * Preserves, for `cut`, the blocks `first..last` it still needs: a block that is a hole in
   * the image, or reads as zeros, is kept as a zero marker (no copy); others are copied.
   * The image's holes are looked up once per call; a write can only have filled a hole
   * since then after preserving that block, which the per-block check sees.
   */
  async #preserve(cut: NbdCut, first: number, last: number): Promise<void> {
    let holes: FileExtent[] | null = null;
    for (let block = first; block <= last; block++) {
      const pending = cut.pending.get(block);
      if (pending) {
        await pending;
        continue;
      }
      if (!cut.needsPreserving(block)) continue;
      const offset = block * this.blockSize;
      const length = Math.min(this.blockSize, this.sizeBytes - offset);
      holes ??= (await this.#image.extents(
        offset,
        Math.min((last + 1) * this.blockSize, this.sizeBytes) - offset,
      )).filter((e) => !e.data);
      if (!cut.needsPreserving(block)) continue;
      if (holes.some((h) => h.offset <= offset && offset + length <= h.offset + h.length)) {
        cut.preserved.putZero(block, length);
        continue;
      }
      const work = this.#image.read(offset, new Uint8Array(length))
        .then((old) =>
          isZero(old) ? cut.preserved.putZero(block, length) : cut.preserved.put(block, old)
        );
      cut.pending.set(block, work);
      try {
        await work;
      } finally {
        cut.pending.delete(block);
      }
    }
  }

  /** The image file (for the export's reads, writes and flushes). */
  get image(): PositionalFile {
    return this.#image;
  }

  // --- the Tracker contract ---

  cut(): Promise<Cut> {
    const run = this.#cutSerial.then(() => this.#cut());
    this.#cutSerial = run.catch(() => {});
    return run;
  }

  async #cut(): Promise<Cut> {
    this.#assertOpen();
    let open!: () => void;
    this.#gate = new Promise((resolve) => (open = resolve));
    try {
      if (this.#inflight > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
      this.#drained = null;
      const reader = await PositionalFile.open(this.#options.imagePath, { readOnly: true });
      const dirty = this.#live;
      const pages = this.#pages;
      this.#live = new Bitmap(dirty.size);
      this.#pages = this.#newPageMasks();
      this.#liveCount = 0;
      this.#options.mirror?.replace(this.#live, this.#livePages());
      const cut = this.#newCut(dirty, true, reader, pages);
      this.#cuts.add(cut);
      return cut;
    } finally {
      this.#gate = null;
      open();
    }
  }

  async resume(dirty: Bitmap): Promise<Cut> {
    this.#assertOpen();
    const reader = await PositionalFile.open(this.#options.imagePath, { readOnly: true });
    // Pages are known only since the previous cut: a resumed generation has no masks.
    return this.#newCut(dirty.clone(), false, reader, null);
  }

  #newCut(
    dirty: Bitmap,
    pointInTime: boolean,
    reader: PositionalFile,
    pages: PageMasks | null,
  ): NbdCut {
    const n = ++this.#cutNumber;
    return new NbdCut({
      dirty,
      pointInTime,
      pages,
      image: reader,
      blockSize: this.blockSize,
      sizeBytes: this.sizeBytes,
      preserved: new PreservedBlocks(
        `${this.#options.stateDir}/cbw-${n}.spill`,
        this.#options.preserveMemoryBytes ?? DEFAULT_PRESERVE_MEMORY_BYTES,
      ),
      onRelease: (cut) => this.#cuts.delete(cut),
    });
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `NBD tracker of ${this.#options.identity.name} is closed`,
      );
    }
  }

  /**
   * Stops serving, releases unreleased cuts, saves the live dirty set for the next start
   * and closes the image. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#server?.close();
    this.#closed = true;
    for (const cut of [...this.#cuts]) await cut.release();
    try {
      await this.#image.sync();
      await io(
        "save the live dirty set",
        () =>
          atomicWrite(
            new DenoFileSystem(),
            `${this.#options.stateDir}/${LIVE_DIRTY_FILE}`,
            this.#live.serialize(),
          ),
      );
    } finally {
      this.#live.free();
      await this.#image.close();
    }
  }
}

/** The live bitmap to start from (see {@linkcode NbdTrackerOptions.initialDirty}). */
async function initialLive(options: NbdTrackerOptions): Promise<Bitmap> {
  const blocks = blockCount(options.identity);
  const path = `${options.stateDir}/${LIVE_DIRTY_FILE}`;
  const saved = await readWhole(new DenoFileSystem(), path);
  // Consumed now: if this run crashes, the next start must not trust it.
  if (saved) await io(`remove ${path}`, () => Deno.remove(path));
  if (options.initialDirty) {
    if (options.initialDirty.size !== blocks) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `initialDirty has ${options.initialDirty.size} bits but the volume has ${blocks} blocks`,
      );
    }
    return options.initialDirty.clone();
  }
  if (saved) {
    try {
      return Bitmap.deserialize(saved, blocks);
    } catch {
      // Damaged: fall through to "everything changed".
    }
  }
  return new Bitmap(blocks).setRange(0, blocks);
}

/** The VM's disk as an NBD export: every change goes through the tracker's write path. */
class TrackingExport implements NbdExport {
  readonly name: string;
  readonly description = "presync-tracked disk";
  readonly sizeBytes: number;
  readonly readOnly = false;
  readonly multiConn = true;
  readonly #tracker: NbdTracker;

  constructor(tracker: NbdTracker, name: string) {
    this.#tracker = tracker;
    this.name = name;
    this.sizeBytes = tracker.sizeBytes;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#tracker.image.read(offset, new Uint8Array(length));
  }

  async readInto(offset: number, into: Uint8Array): Promise<void> {
    await this.#tracker.image.read(offset, into);
  }

  async #change(
    offset: number,
    length: number,
    preserve: boolean,
    apply: () => Promise<void>,
  ): Promise<void> {
    await this.#tracker.enterWrite();
    try {
      await this.#tracker.beforeChange(offset, length, preserve);
      await apply();
    } finally {
      this.#tracker.leaveWrite();
    }
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#change(offset, data.length, true, () => this.#tracker.image.write(offset, data));
  }

  /** Punches a hole where the file system can (see `zeroFileRange`). */
  writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    return this.#change(offset, length, true, async () => {
      await zeroFileRange(this.#tracker.image, offset, length, options);
    });
  }

  /** Punches a hole where the file system can; elsewhere the bytes stay as they were. */
  trim(offset: number, length: number): Promise<void> {
    return this.#change(offset, length, true, async () => {
      await this.#tracker.image.punchHole(offset, length);
    });
  }

  /** The image's real holes (`SEEK_HOLE`). */
  allocation(offset: number, length: number): Promise<StatusExtent[]> {
    return fileAllocation(this.#tracker.image, offset, length);
  }

  flush(): Promise<void> {
    return this.#tracker.image.sync();
  }
}

/**
 * Creates an NBD tracker and, when `listen` is given, starts serving the disk there.
 *
 * @example
 * ```ts ignore
 * const tracker = await createNbdTracker({
 *   imagePath: "/var/lib/vm/disk.img",
 *   identity: state.identity,
 *   stateDir: state.dir,
 *   listen: [parseNbdAddress("unix:/run/presync/disk.sock")],
 * });
 * // qemu-system-x86_64 -drive file=nbd+unix:///disk?socket=/run/presync/disk.sock,format=raw
 * const cut = await tracker.cut(); // then sendGeneration(state, cut, destination)
 * ```
 */
export function createNbdTracker(options: NbdTrackerOptions): Promise<NbdTracker> {
  return NbdTracker.create(options);
}
