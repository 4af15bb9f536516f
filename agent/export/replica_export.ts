import { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileLock } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "../nbd/nbd_constants.ts";
import type { NbdExport } from "../nbd/nbd_export.ts";
import type { StatusExtent } from "../nbd/reply_codec.ts";
import {
  hasDataExtents,
  keepsGenerations,
  type ReplicaImage,
  type VolumeBackend,
} from "../store/replica_backend.ts";
import { parseReplicaMeta } from "../store/replica_meta.ts";
import type { ReplicaStore } from "../store/replica_store.ts";
import { initialisingError, type ReplicaMeta } from "../store/replica_volume.ts";
import { StagingArea } from "../store/staging_area.ts";
import { ENTRY_BYTES, isZeroEntry } from "../volume/block_hashes.ts";
import { MANIFEST_PIECE_ENTRIES } from "../volume/manifest_file.ts";
import { openManifest } from "../store/open_manifest.ts";
import { blockCount, type VolumeIdentity } from "../volume/volume_identity.ts";
/** Most blocks looked at for one BLOCK_STATUS reply (the client asks again for the rest). */
const STATUS_BLOCKS_PER_REPLY = 1 << 20;

/**
 * Postcopy: the blocks of the generation still arriving are fetched from the source on
 * demand (`PostcopyView`, over the session's on-demand streams).
 */
export interface PostcopySource {
  /** Whether `block` is not yet committed in the replica (and must come from the source). */
  isMissing(block: number): boolean;
  /** Whether the generation arriving writes `block` (its zero status may change). */
  isChanging(block: number): boolean;
  /**
   * The bytes of `count` consecutive missing blocks from `first`, as of the generation being
   * committed; an entry is null when it was committed meanwhile (read the replica).
   */
  fetchBlocks(first: number, count: number): Promise<(Uint8Array | null)[]>;
}

/** Options of {@linkcode ReplicaExport.open}. */
export interface ReplicaExportOptions {
  /** The destination's store; the export reads through its back end. */
  store: ReplicaStore;
  volume: string;
  /** Export name (default: the volume name). */
  exportName?: string;
  /** On-demand fetching of blocks not yet committed (postcopy); absent: none. */
  postcopy?: PostcopySource;
  /**
   * Run the store's crash recovery first (default true). False inside the destination
   * daemon, where the sync server owns the replica and a commit may be in progress: the
   * blocks it changes are then the postcopy's.
   */
  recover?: boolean;
  /**
   * Serve this committed generation, kept read-only by the back end (RBD snapshots), instead
   * of the last one. Not with `postcopy`.
   */
  generation?: number;
}

/**
 * The committed replica of one volume as a read-only NBD export, read through the store's
 * back end. Opening runs the store's crash recovery first, so what is served is exactly a
 * committed generation; a replica still seeding its first generation is refused
 * (`VOLUME_INITIALISING`) unless a postcopy source serves that generation. Blocks whose
 * manifest entry says "all zero" are reported as holes that read as zeros
 * (`base:allocation`). The export holds the volume's shared lock, so it cannot be deleted
 * meanwhile. The destination agent must not commit into the replica while it is exported
 * (evacuation stops syncing first).
 */
export class ReplicaExport implements NbdExport {
  readonly name: string;
  readonly description: string;
  readonly sizeBytes: number;
  readonly readOnly = true;
  readonly multiConn = true;
  /** The committed state being served. */
  readonly meta: ReplicaMeta;
  /** Where a writable export keeps its overlay by default (the back end's choice). */
  readonly overlayPath: string;
  readonly #image: ReplicaImage;
  readonly #zero: Bitmap;
  readonly #identity: VolumeIdentity;
  readonly #postcopy?: PostcopySource;
  readonly #lock: FileLock;
  #closed = false;

  private constructor(
    meta: ReplicaMeta,
    parts: { image: ReplicaImage; zero: Bitmap; lock: FileLock; overlayPath: string },
    options: ReplicaExportOptions,
  ) {
    this.meta = meta;
    this.#identity = meta.identity;
    this.#image = parts.image;
    this.#zero = parts.zero;
    this.#lock = parts.lock;
    this.overlayPath = parts.overlayPath;
    this.#postcopy = options.postcopy;
    this.name = options.exportName ?? meta.identity.name;
    this.sizeBytes = meta.identity.sizeBytes;
    this.description = `presync replica ${meta.identity.name}, generation ` +
      `${meta.committedGeneration}`;
  }

  /** Recovers (unless `recover` is false) and opens the replica `volume` of `store`. */
  static async open(options: ReplicaExportOptions): Promise<ReplicaExport> {
    const { store } = options;
    const backend = store.backend.volume(options.volume);
    const lock = await io(`lock ${backend.location}`, () => backend.lock("shared"));
    if (!lock) {
      throw new PresyncError(
        ErrorCode.STORE_BUSY,
        `volume ${options.volume} in ${store.location} is being deleted`,
        { retryable: true },
      );
    }
    try {
      let meta: ReplicaMeta;
      let initialising: boolean;
      if (options.recover === false) {
        meta = await store.readMeta(options.volume);
        initialising = (await StagingArea.readHeader(backend.staging))?.inPlace === true;
      } else {
        const volume = await store.open(options.volume);
        meta = volume.meta;
        initialising = volume.initialising;
        volume.close();
      }
      if (initialising && !options.postcopy) {
        throw initialisingError(meta.identity.name, "exported");
      }
      const older = options.generation !== undefined &&
        options.generation !== meta.committedGeneration;
      if (older) meta = await keptMeta(backend, options.generation!, options.postcopy);
      // A back end that keeps generations serves the committed one from its snapshot, which
      // no later commit changes; a postcopy export reads the head, where commits land.
      const image = keepsGenerations(backend) && !options.postcopy &&
          meta.committedGeneration > 0
        ? await backend.openGeneration(meta.committedGeneration)
        : await backend.openImage("read");
      let zero: Bitmap;
      try {
        // An older generation's manifest is not kept: its holes are where its image holds no
        // data when the image can tell, else none of its blocks is known to be zero.
        zero = older
          ? await zeroBlocksOutside(image, meta.identity)
          : await zeroBlocksOf(backend, meta.identity);
      } catch (err) {
        image.close();
        throw err;
      }
      try {
        return new ReplicaExport(
          meta,
          { image, zero, lock, overlayPath: backend.overlayPath },
          options,
        );
      } catch (err) {
        zero.free();
        image.close();
        throw err;
      }
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /** The volume's identity. */
  get identity(): VolumeIdentity {
    return this.#identity;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const data = new Uint8Array(length);
    await this.#image.read(offset, data);
    const postcopy = this.#postcopy;
    if (!postcopy || length === 0) return data;
    const { blockSize } = this.#identity;
    const first = Math.floor(offset / blockSize);
    const last = Math.floor((offset + length - 1) / blockSize);
    // Runs of missing blocks, fetched concurrently.
    const runs: Promise<void>[] = [];
    for (let block = first; block <= last; block++) {
      if (!postcopy.isMissing(block)) continue;
      const start = block;
      while (block + 1 <= last && postcopy.isMissing(block + 1)) block++;
      runs.push(this.#fillFromSource(postcopy, data, offset, start, block - start + 1));
    }
    await Promise.all(runs);
    return data;
  }

  async #fillFromSource(
    postcopy: PostcopySource,
    data: Uint8Array,
    offset: number,
    first: number,
    count: number,
  ): Promise<void> {
    const { blockSize } = this.#identity;
    const fetched = await postcopy.fetchBlocks(first, count);
    for (let i = 0; i < count; i++) {
      const start = (first + i) * blockSize;
      const from = Math.max(offset, start);
      const to = Math.min(offset + data.length, start + blockSize, this.sizeBytes);
      const bytes = fetched[i];
      const into = data.subarray(from - offset, to - offset);
      // Committed meanwhile: the replica has it now.
      if (bytes === null) await this.#image.read(from, into);
      else into.set(bytes.subarray(from - start, to - start));
    }
  }

  write(): Promise<void> {
    return Promise.reject(new Error("the replica export is read-only"));
  }

  writeZeroes(): Promise<void> {
    return this.write();
  }

  trim(): Promise<void> {
    return this.write();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Zero blocks as holes reading as zeros, the rest as data. */
  allocation(offset: number, length: number): Promise<StatusExtent[]> {
    const { blockSize } = this.#identity;
    const end = Math.min(offset + length, this.sizeBytes);
    const first = Math.floor(offset / blockSize);
    const last = Math.min(
      Math.floor((end - 1) / blockSize),
      first + STATUS_BLOCKS_PER_REPLY - 1,
    );
    const extents: StatusExtent[] = [];
    let at = offset;
    const hole = (block: number) =>
      this.#zero.get(block) && !(this.#postcopy?.isChanging(block) ?? false);
    for (let block = first; block <= last;) {
      const zero = hole(block);
      let next = block + 1;
      while (next <= last && hole(next) === zero) next++;
      const stop = Math.min(next * blockSize, this.sizeBytes);
      extents.push({
        lengthBytes: Math.min(stop - at, 0x8000_0000),
        flags: zero ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0,
      });
      if (stop - at > 0x8000_0000) break;
      at = stop;
      block = next;
    }
    return Promise.resolve(extents);
  }

  /** Closes the image, frees memory and gives up the volume's lock. Idempotent. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#image.close();
    this.#zero.free();
    this.#lock.release();
    return Promise.resolve();
  }
}

/** The metadata of kept generation `generation` of `backend`, or a clear refusal. */
async function keptMeta(
  backend: VolumeBackend,
  generation: number,
  postcopy: PostcopySource | undefined,
): Promise<ReplicaMeta> {
  if (postcopy) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      "a postcopy export serves the generation arriving; drop --generation",
    );
  }
  if (!keepsGenerations(backend)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${backend.location} keeps only its last committed generation; export without ` +
        `--generation, or keep generations with serve --keep N`,
    );
  }
  const bytes = await backend.readGenerationMeta(generation);
  if (!bytes) {
    const kept = (await backend.generations()).map((g) => g.generation);
    throw new PresyncError(
      ErrorCode.VOLUME_NOT_FOUND,
      `generation ${generation} of volume ${backend.name} is not kept in ${backend.location} ` +
        `(kept: ${kept.join(", ") || "none"})`,
    );
  }
  return parseReplicaMeta(bytes, backend);
}

/**
 * Blocks that lie wholly outside the data extents of `image` (none when it cannot report
 * them: every block is then served as data).
 */
async function zeroBlocksOutside(image: ReplicaImage, identity: VolumeIdentity): Promise<Bitmap> {
  const zero = new Bitmap(blockCount(identity));
  if (!hasDataExtents(image)) return zero;
  try {
    const extents = await io(`read ${identity.name} data extents`, () => image.dataExtents());
    zero.setRange(0, zero.size);
    const { blockSize } = identity;
    for (const [offset, length] of extents) {
      if (length <= 0) continue;
      const first = Math.floor(offset / blockSize);
      const end = Math.min(Math.ceil((offset + length) / blockSize), zero.size);
      if (end > first) zero.clearRange(first, end - first);
    }
    return zero;
  } catch (err) {
    zero.free();
    throw err;
  }
}

/** Blocks whose manifest entry is the zero entry (all-zero blocks). */
async function zeroBlocksOf(backend: VolumeBackend, identity: VolumeIdentity): Promise<Bitmap> {
  const blocks = blockCount(identity);
  const zero = new Bitmap(blocks);
  try {
    const manifest = await openManifest(backend, blocks, "read");
    try {
      const buffer = new Uint8Array(Math.min(MANIFEST_PIECE_ENTRIES, blocks) * ENTRY_BYTES);
      for (let first = 0; first < blocks; first += MANIFEST_PIECE_ENTRIES) {
        const count = Math.min(MANIFEST_PIECE_ENTRIES, blocks - first);
        const entries = await manifest.read(first, count, buffer);
        for (let i = 0; i < count; i++) {
          if (isZeroEntry(entries.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES))) {
            zero.set(first + i);
          }
        }
      }
    } finally {
      manifest.close();
    }
    return zero;
  } catch (err) {
    zero.free();
    throw err;
  }
}
