import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { atomicWrite, mkdirDurable, readWhole } from "../../agent/fs/atomic_write.ts";
import type { FileHandle, FileLock, FileSystem } from "../../agent/fs/file_system.ts";
import { io, toIoError } from "../../agent/fs/io_error.ts";
import type { Bitmap } from "../../agent/core/mod.ts";
import type {
  KeptGeneration,
  KeptGenerations,
  ReplicaBackend,
  ReplicaImage,
  SpaceUsage,
  UndoBeforeApply,
  VolumeBackend,
} from "../../agent/store/replica_backend.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import {
  blockCount,
  validateVolumeName,
  type VolumeIdentity,
} from "../../agent/volume/volume_identity.ts";
import { DirectoryImage } from "./_directory_image.ts";
import { DirectoryStaging } from "./_directory_staging.ts";
import { DirectoryGenerations } from "./_kept_generations.ts";

/** Prefix of a volume directory being removed (no volume name starts with a dot). */
const REMOVING_PREFIX = ".deleted.";
/** Most generations `--keep` may keep (each older one is an undo log of its overwrites). */
const MAX_KEEP = 1000;

/** Options of a {@linkcode DirectoryBackend}. */
export interface DirectoryBackendOptions {
  /**
   * Committed generations kept (default 1: the last one); with more, each commit first
   * saves what it overwrites in an undo log (`serve --keep N`, docs/STORE.md).
   */
  keep?: number;
}

/**
 * A store that is a directory with one subdirectory per volume: `image`, `manifest`,
 * `meta.json`, `staging/`, `undo/` (docs/STORE.md). Volume names are validated, so no name
 * reaches outside the root.
 *
 * @example
 * ```ts ignore
 * import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
 * import { ReplicaStore } from "../../agent/store/replica_store.ts";
 * const store = new ReplicaStore(new DirectoryBackend(new DenoFileSystem(), "/srv/presync"));
 * ```
 */
export class DirectoryBackend implements ReplicaBackend, SpaceUsage {
  readonly location: string;
  /** Committed generations kept. */
  readonly keep: number;
  readonly #fs: FileSystem;

  constructor(fs: FileSystem, root: string, options: DirectoryBackendOptions = {}) {
    const keep = options.keep ?? 1;
    if (!Number.isSafeInteger(keep) || keep < 1 || keep > MAX_KEEP) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `--keep must be a whole number of generations from 1 to ${MAX_KEEP}: received ${keep}`,
      );
    }
    this.#fs = fs;
    this.location = root;
    this.keep = keep;
  }

  #dir(name: string): string {
    return `${this.location}/${validateVolumeName(name)}`;
  }

  async list(): Promise<string[]> {
    if (!(await this.#fs.exists(this.location))) return [];
    const names: string[] = [];
    for (const name of await this.#fs.readDir(this.location)) {
      if (!isVolumeName(name)) continue;
      if (await this.#fs.exists(`${this.location}/${name}/meta.json`)) names.push(name);
    }
    return names.sort();
  }

  volume(name: string): VolumeBackend {
    return new KeptDirectoryVolume(this.#fs, this.location, validateVolumeName(name), this.keep);
  }

  /** @throws {PresyncError} `VOLUME_EXISTS` when volume `name` has its metadata here. */
  async #assertAbsent(name: string): Promise<void> {
    if (await this.#fs.exists(`${this.#dir(name)}/meta.json`)) {
      throw new PresyncError(
        ErrorCode.VOLUME_EXISTS,
        `volume ${name} already exists in ${this.location}`,
      );
    }
  }

  async create(identity: VolumeIdentity): Promise<void> {
    const fs = this.#fs;
    const dir = this.#dir(identity.name);
    await this.#assertAbsent(identity.name);
    await mkdirDurable(fs, this.location);
    // A remnant of a crashed create or remove: it has no metadata, nothing to keep.
    await fs.remove(dir);
    await fs.remove(`${this.location}/${REMOVING_PREFIX}${identity.name}`);
    await mkdirDurable(fs, dir);
    await createZeroFile(fs, `${dir}/image`, identity.sizeBytes);
    await createZeroFile(fs, `${dir}/manifest`, blockCount(identity) * ENTRY_BYTES);
    await fs.syncDir(dir);
  }

  /**
   * Creates the directory of volume `identity` around an existing raw image (a fail-back's
   * original disk), hard-linked as its `image`, so that commits write into that file; its
   * manifest is all zeros and it has no `meta.json` yet: the caller writes the manifest,
   * then the metadata, which is when the volume exists. The image must be on the store's
   * file system and exactly the volume's size.
   *
   * @throws {PresyncError} `VOLUME_EXISTS`, `VOLUME_MISMATCH` (size), `INVALID_ARGUMENT`
   *   (another file system), `IO`
   */
  async adopt(identity: VolumeIdentity, imagePath: string): Promise<void> {
    const fs = this.#fs;
    const dir = this.#dir(identity.name);
    await this.#assertAbsent(identity.name);
    const size = (await io(`stat ${imagePath}`, () => Deno.stat(imagePath))).size;
    if (size !== identity.sizeBytes) {
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `${imagePath} is ${size} bytes but volume ${identity.name} is ${identity.sizeBytes}`,
      );
    }
    await mkdirDurable(fs, this.location);
    await fs.remove(dir);
    await mkdirDurable(fs, dir);
    try {
      await Deno.link(imagePath, `${dir}/image`);
    } catch (err) {
      if (err instanceof Error && /EXDEV|cross-device/i.test(err.message)) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          `${imagePath} and the store ${this.location} are on different file systems: put ` +
            `the store beside the image (it is hard-linked, never copied)`,
          { cause: err },
        );
      }
      throw toIoError(err, `link ${imagePath} into ${dir}`);
    }
    await createZeroFile(fs, `${dir}/manifest`, blockCount(identity) * ENTRY_BYTES);
    await fs.syncDir(dir);
  }

  /** The image file of volume `name` (`adopt` links the original image there). */
  imagePath(name: string): string {
    return `${this.#dir(name)}/image`;
  }

  async remove(name: string): Promise<void> {
    const fs = this.#fs;
    const dir = this.#dir(name);
    const removing = `${this.location}/${REMOVING_PREFIX}${name}`;
    if (await fs.exists(dir)) {
      // Renamed away first: from then on the volume is not listed, whatever happens next.
      await fs.remove(removing);
      await fs.rename(dir, removing);
      await fs.syncDir(this.location);
    }
    const overlay = `${this.location}/${name}.overlay`;
    await fs.remove(`${overlay}.map`);
    await fs.remove(`${overlay}.base`);
    await fs.remove(overlay);
    await fs.remove(removing);
    if (await fs.exists(this.location)) await fs.syncDir(this.location);
  }

  allocatedBytes(name: string): Promise<number> {
    return this.#fs.allocatedBytes(this.#dir(name));
  }
}

function isVolumeName(name: string): boolean {
  try {
    validateVolumeName(name);
    return true;
  } catch {
    return false;
  }
}

async function createZeroFile(fs: FileSystem, path: string, sizeBytes: number): Promise<void> {
  const file = await fs.open(path, { create: true });
  try {
    await file.truncate(0);
    await file.truncate(sizeBytes);
    await file.sync();
  } finally {
    file.close();
  }
}

/** One volume directory. */
class DirectoryVolume implements VolumeBackend {
  readonly name: string;
  readonly location: string;
  readonly overlayPath: string;
  readonly staging: DirectoryStaging;
  readonly #fs: FileSystem;

  constructor(fs: FileSystem, root: string, name: string) {
    this.#fs = fs;
    this.name = name;
    this.location = `${root}/${name}`;
    this.overlayPath = `${root}/${name}.overlay`;
    this.staging = new DirectoryStaging(fs, this.location);
  }

  readMeta(): Promise<Uint8Array | null> {
    const path = `${this.location}/meta.json`;
    return io(`read ${path}`, () => readWhole(this.#fs, path));
  }

  writeMeta(bytes: Uint8Array): Promise<void> {
    const path = `${this.location}/meta.json`;
    return io(`write ${path}`, () => atomicWrite(this.#fs, path, bytes));
  }

  async openImage(mode: "read" | "write"): Promise<ReplicaImage> {
    const path = `${this.location}/image`;
    const file = await this.#open(path, mode);
    try {
      const size = await io(`size ${path}`, () => file.size());
      return new DirectoryImage(file, path, size);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  openManifest(mode: "read" | "write"): Promise<FileHandle> {
    return this.#open(`${this.location}/manifest`, mode);
  }

  async lock(mode: "shared" | "exclusive"): Promise<FileLock | null> {
    if (!(await this.#fs.exists(this.location))) throw this.#notFound();
    return await io(`lock ${this.location}`, () => this.#fs.tryLock(this.location, mode));
  }

  async #open(path: string, mode: "read" | "write"): Promise<FileHandle> {
    try {
      return await this.#fs.open(path, { write: mode === "write" });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw this.#notFound(err);
      throw toIoError(err, `open ${path}`);
    }
  }

  #notFound(cause?: unknown): PresyncError {
    return new PresyncError(
      ErrorCode.VOLUME_NOT_FOUND,
      `no replica of volume ${this.name} in ${this.location}`,
      { cause },
    );
  }
}

/**
 * A volume directory with its kept generations: the committed one, and older ones as undo
 * logs when a `serve --keep N` (N ≥ 2) wrote them. Any open of the store lists, exports and
 * rolls back to what is kept, whatever its own `keep`.
 */
class KeptDirectoryVolume extends DirectoryVolume implements KeptGenerations, UndoBeforeApply {
  readonly #generations: DirectoryGenerations;

  constructor(fs: FileSystem, root: string, name: string, keep: number) {
    super(fs, root, name);
    this.#generations = new DirectoryGenerations(fs, this, keep);
  }

  saveUndo(generation: number, blocks: Bitmap): Promise<void> {
    return this.#generations.saveUndo(generation, blocks);
  }

  generations(): Promise<KeptGeneration[]> {
    return this.#generations.generations();
  }

  async openGeneration(generation: number): Promise<ReplicaImage> {
    const head = await this.openImage("read");
    try {
      return await this.#generations.openGeneration(generation, head);
    } catch (err) {
      head.close();
      throw err;
    }
  }

  readGenerationMeta(generation: number): Promise<Uint8Array | null> {
    return this.#generations.readGenerationMeta(generation);
  }

  async rollbackImage(generation: number): Promise<void> {
    const image = await this.openImage("write");
    try {
      await this.#generations.rollbackImage(generation, image);
    } finally {
      image.close();
    }
  }
}
