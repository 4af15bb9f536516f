/**
 * Store back end `rbd`: each replica is an RBD image of a Ceph pool, its manifest a small
 * image beside it, its committed state in the image's metadata and one snapshot per
 * committed generation; the staging area and the locks stay in a local state directory
 * (docs/STORE.md, "RBD back end", says why).
 *
 * @module
 */

import { assertInteger, ErrorCode, PresyncError } from "../../agent/errors.ts";
import { mkdirDurable } from "../../agent/fs/atomic_write.ts";
import type { FileHandle, FileLock, FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import type {
  KeptGeneration,
  KeptGenerations,
  ReplicaBackend,
  VolumeBackend,
} from "../../agent/store/replica_backend.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import {
  blockCount,
  validateVolumeName,
  type VolumeIdentity,
} from "../../agent/volume/volume_identity.ts";
import { DirectoryStaging } from "../store-directory/mod.ts";
import { OpenImages } from "./_open_images.ts";
import { RbdFile } from "./_rbd_file.ts";
import {
  generationMetaKey,
  generationSnapshot,
  RBD_WRITE_WINDOW,
  RbdReplicaImage,
  snapshotGeneration,
} from "./_rbd_replica_image.ts";
import { MAX_AIO_DEPTH } from "./aio_window.ts";
import { RadosCluster, type RadosConnectOptions } from "./rados_cluster.ts";
import { ImageFeature } from "./rbd_image.ts";
import type { RbdPool } from "./rbd_pool.ts";
import type { RbdStoreSpec } from "./rbd_store_spec.ts";

/** Prefix of a replica's data image: volume `db1` is image `POOL/presync-db1`. */
export const IMAGE_PREFIX = "presync-";
/**
 * Suffix of a replica's manifest image (`presync-db1+manifest`): `+` is in no volume name,
 * so no volume's data image can be another's manifest.
 */
export const MANIFEST_SUFFIX = "+manifest";
/** The image metadata key holding the metadata record (meta.json's bytes). */
export const META_KEY = "presync.meta";
/**
 * Features of a replica's images: layering only. presync's own lock says who writes;
 * librbd's exclusive lock would make the next opener after a `kill -9` wait for the dead
 * client's watch to time out (30 s) before it could write.
 */
const IMAGE_FEATURES = ImageFeature.LAYERING;

/** A committed generation kept as a snapshot of the replica's image. */
export interface GenerationSnapshot extends KeptGeneration {
  /** The snapshot's name (`presync-g<generation>`). */
  snapshot: string;
}

/** Options of {@linkcode RbdBackend}. */
export interface RbdBackendOptions {
  /** Which pool and how to reach the cluster. */
  spec: RbdStoreSpec;
  /** Local directory for staging areas, locks and overlays (`serve --state DIR`). */
  stateDir: string;
  /** The local file system (staging areas and locks). */
  fs: FileSystem;
  /** Committed generations whose snapshots are kept (default 1: the last one). */
  keep?: number;
  /**
   * Writes a commit keeps in flight on one image (default {@linkcode RBD_WRITE_WINDOW}; 1 to
   * {@linkcode MAX_AIO_DEPTH}).
   */
  writeWindow?: number;
  /** More connection options (timeouts, config). */
  connect?: Omit<RadosConnectOptions, "confPath" | "clientId" | "keyringPath">;
}

/**
 * A store of replicas in one RBD pool. Connects on first use; {@linkcode close} ends the
 * connection.
 *
 * @example
 * ```ts ignore
 * import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
 * import { ReplicaStore } from "../../agent/store/replica_store.ts";
 * const backend = new RbdBackend({
 *   spec: { pool: "replicas" },
 *   stateDir: "/var/lib/presync/serve",
 *   fs: new DenoFileSystem(),
 * });
 * const store = new ReplicaStore(backend);
 * ```
 */
export class RbdBackend implements ReplicaBackend, AsyncDisposable {
  readonly location: string;
  /** Committed generations whose snapshots are kept. */
  readonly keep: number;
  /** Writes a commit keeps in flight on one image. */
  readonly writeWindow: number;
  readonly #options: RbdBackendOptions;
  readonly #images = new OpenImages();
  #cluster: Promise<{ cluster: RadosCluster; pool: RbdPool }> | null = null;

  constructor(options: RbdBackendOptions) {
    const keep = options.keep ?? 1;
    if (!Number.isSafeInteger(keep) || keep < 1) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `--keep must be a whole number of generations, at least 1: received ${keep}`,
      );
    }
    this.keep = keep;
    this.writeWindow = options.writeWindow ?? RBD_WRITE_WINDOW;
    assertInteger("writeWindow", this.writeWindow, 1, MAX_AIO_DEPTH);
    this.#options = options;
    this.location = `rbd:${options.spec.pool}`;
  }

  /** The pool, connecting first when needed (a failed connection is tried again next time). */
  async pool(): Promise<RbdPool> {
    this.#cluster ??= (async () => {
      const { spec, connect } = this.#options;
      const cluster = await RadosCluster.connect({
        ...connect,
        // No librbd cache: a write is acknowledged once the OSDs have it, so a failed write
        // fails its own promise. With the cache, a write-back refused for the pool's quota
        // was seen to lose blocks that a later flush then reported as durable. The protocol
        // keeps its own window of writes in flight instead.
        config: { rbd_cache: "false", ...connect?.config },
        confPath: spec.confPath,
        clientId: spec.clientId,
        keyringPath: spec.keyringPath,
      });
      try {
        return { cluster, pool: cluster.openPool(spec.pool) };
      } catch (err) {
        await cluster.close();
        throw err;
      }
    })();
    const connecting = this.#cluster;
    try {
      return (await connecting).pool;
    } catch (err) {
      if (this.#cluster === connecting) this.#cluster = null;
      throw err;
    }
  }

  /** The shared handles of this back end (for its volumes). */
  get images(): OpenImages {
    return this.#images;
  }

  async list(): Promise<string[]> {
    const pool = await this.pool();
    const names: string[] = [];
    for (const image of await pool.listImages()) {
      if (!image.startsWith(IMAGE_PREFIX) || image.includes("+")) continue;
      const name = image.slice(IMAGE_PREFIX.length);
      if (!isVolumeName(name)) continue;
      if (await this.volume(name).readMeta() !== null) names.push(name);
    }
    return names.sort();
  }

  volume(name: string): RbdVolume {
    return new RbdVolume(this, this.#options, validateVolumeName(name));
  }

  async create(identity: VolumeIdentity): Promise<void> {
    const volume = this.volume(identity.name);
    if (await volume.readMeta() !== null) {
      throw new PresyncError(
        ErrorCode.VOLUME_EXISTS,
        `volume ${identity.name} already exists in ${this.location}`,
      );
    }
    // A remnant of a crashed create or remove: it has no metadata, nothing to keep.
    await this.#removeParts(volume);
    const pool = await this.pool();
    await pool.createImage(volume.imageName, identity.sizeBytes, { features: IMAGE_FEATURES });
    await pool.createImage(volume.manifestName, blockCount(identity) * ENTRY_BYTES, {
      features: IMAGE_FEATURES,
    });
    await io(`create ${volume.stateDir}`, () => mkdirDurable(this.#options.fs, volume.stateDir));
  }

  async remove(name: string): Promise<void> {
    const volume = this.volume(name);
    const pool = await this.pool();
    // The metadata goes first: from then on the volume is not listed, whatever happens next.
    try {
      const { image, release } = await this.#images.acquire(pool, volume.imageName);
      try {
        await image.metadata.remove(META_KEY);
      } finally {
        release();
      }
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    await this.#removeParts(volume);
  }

  async #removeParts(volume: RbdVolume): Promise<void> {
    await this.#images.settled();
    const pool = await this.pool();
    for (const name of [volume.imageName, volume.manifestName]) {
      let image;
      try {
        image = await pool.openImage(name);
      } catch (err) {
        if (isNotFound(err)) continue;
        throw err;
      }
      try {
        for (const snapshot of await image.snapshots.list()) {
          if (await image.snapshots.isProtected(snapshot.name)) {
            await image.snapshots.unprotect(snapshot.name);
          }
          await image.snapshots.remove(snapshot.name);
        }
      } finally {
        await image.close();
      }
      await pool.removeImage(name);
    }
    await io(`remove ${volume.stateDir}`, () => this.#options.fs.remove(volume.stateDir));
  }

  /** Closes the images still open and the connection. Idempotent. */
  async close(): Promise<void> {
    await this.#images.settled();
    const connecting = this.#cluster;
    this.#cluster = null;
    if (!connecting) return;
    const connected = await connecting.catch(() => null);
    await connected?.cluster.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** One replica of an {@linkcode RbdBackend}. */
export class RbdVolume implements VolumeBackend, KeptGenerations {
  readonly name: string;
  readonly location: string;
  readonly overlayPath: string;
  readonly staging: DirectoryStaging;
  /** The data image's name in the pool. */
  readonly imageName: string;
  /** The manifest image's name in the pool. */
  readonly manifestName: string;
  /** The volume's local directory (staging area, overlay). */
  readonly stateDir: string;
  readonly #backend: RbdBackend;
  readonly #options: RbdBackendOptions;

  constructor(backend: RbdBackend, options: RbdBackendOptions, name: string) {
    this.#backend = backend;
    this.#options = options;
    this.name = name;
    this.imageName = `${IMAGE_PREFIX}${name}`;
    this.manifestName = `${this.imageName}${MANIFEST_SUFFIX}`;
    this.location = `${backend.location}/${this.imageName}`;
    this.stateDir = `${options.stateDir}/volumes/${name}`;
    this.overlayPath = `${this.stateDir}/overlay`;
    this.staging = new DirectoryStaging(options.fs, this.stateDir);
  }

  async #acquire(image: string, mode: "read" | "write", snapshot?: string) {
    const pool = await this.#backend.pool();
    try {
      return await this.#backend.images.acquire(pool, image, {
        readOnly: mode === "read",
        snapshot,
      });
    } catch (err) {
      if (isNotFound(err)) {
        throw new PresyncError(
          ErrorCode.VOLUME_NOT_FOUND,
          `no replica of volume ${this.name} in ${this.#backend.location} (image ${image}` +
            `${snapshot ? `@${snapshot}` : ""} not found)`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  async readMeta(): Promise<Uint8Array | null> {
    let handle;
    try {
      handle = await this.#acquire(this.imageName, "read");
    } catch (err) {
      if (err instanceof PresyncError && err.code === ErrorCode.VOLUME_NOT_FOUND) return null;
      throw err;
    }
    try {
      const value = await handle.image.metadata.get(META_KEY);
      return value === undefined ? null : new TextEncoder().encode(value);
    } finally {
      handle.release();
    }
  }

  /**
   * Writes the record under {@linkcode META_KEY} and, first, under the key of the generation
   * it names (`presync.meta.g<N>`, kept as long as that generation's snapshot), so a rollback
   * finds the root and cut time of the generation it returns to.
   */
  async writeMeta(bytes: Uint8Array): Promise<void> {
    const text = new TextDecoder().decode(bytes);
    const { image, release } = await this.#acquire(this.imageName, "write");
    try {
      const generation = committedGenerationOf(text);
      if (generation !== null && generation > 0) {
        await image.metadata.set(generationMetaKey(generation), text);
      }
      await image.metadata.set(META_KEY, text);
    } finally {
      release();
    }
  }

  async openImage(mode: "read" | "write"): Promise<RbdReplicaImage> {
    return await this.#openData(mode);
  }

  /** Opens the image read-only at the snapshot of committed generation `generation`. */
  openGeneration(generation: number): Promise<RbdReplicaImage> {
    return this.#openData("read", generationSnapshot(generation));
  }

  async readGenerationMeta(generation: number): Promise<Uint8Array | null> {
    const { image, release } = await this.#acquire(this.imageName, "read");
    try {
      const value = await image.metadata.get(generationMetaKey(generation));
      return value === undefined ? null : new TextEncoder().encode(value);
    } finally {
      release();
    }
  }

  async rollbackImage(generation: number): Promise<void> {
    const { image, release } = await this.#acquire(this.imageName, "write");
    try {
      await image.snapshots.rollback(generationSnapshot(generation));
      for (const snapshot of await image.snapshots.list()) {
        const g = snapshotGeneration(snapshot.name);
        if (g === null || g <= generation) continue;
        await image.snapshots.remove(snapshot.name);
        await image.metadata.remove(generationMetaKey(g));
      }
      await image.flush();
    } finally {
      release();
    }
  }

  /** The committed generations kept as snapshots, oldest first. */
  async generations(): Promise<GenerationSnapshot[]> {
    const { image, release } = await this.#acquire(this.imageName, "read");
    try {
      const kept: GenerationSnapshot[] = [];
      for (const snapshot of await image.snapshots.list()) {
        const generation = snapshotGeneration(snapshot.name);
        if (generation === null) continue;
        kept.push({
          generation,
          snapshot: snapshot.name,
          sizeBytes: snapshot.sizeBytes,
          createdAtMs: snapshot.createdAtMs,
        });
      }
      return kept.sort((a, b) => a.generation - b.generation);
    } finally {
      release();
    }
  }

  async #openData(mode: "read" | "write", snapshot?: string): Promise<RbdReplicaImage> {
    const { image, release } = await this.#acquire(this.imageName, mode, snapshot);
    try {
      const { sizeBytes } = await image.stat();
      if (mode === "write") {
        await io(`create ${this.stateDir}`, () => mkdirDurable(this.#options.fs, this.stateDir));
      }
      return new RbdReplicaImage(image, sizeBytes, {
        keep: this.#backend.keep,
        writeWindow: this.#backend.writeWindow,
      }, release);
    } catch (err) {
      release();
      throw err;
    }
  }

  async openManifest(mode: "read" | "write"): Promise<FileHandle> {
    const { image, release } = await this.#acquire(this.manifestName, mode);
    try {
      return await RbdFile.over(image, release);
    } catch (err) {
      release();
      throw err;
    }
  }

  async lock(mode: "shared" | "exclusive"): Promise<FileLock | null> {
    const pool = await this.#backend.pool();
    if (!(await pool.listImages()).includes(this.imageName)) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `no replica of volume ${this.name} in ${this.#backend.location}`,
      );
    }
    const fs = this.#options.fs;
    const dir = `${this.#options.stateDir}/locks`;
    const path = `${dir}/${this.name}`;
    return await io(`lock ${path}`, async () => {
      if (!(await fs.exists(path))) {
        await mkdirDurable(fs, dir);
        const file = await fs.open(path, { create: true });
        file.close();
      }
      return await fs.tryLock(path, mode);
    });
  }
}

/** The `committedGeneration` a metadata record names, or null when it names none. */
function committedGenerationOf(text: string): number | null {
  try {
    const value = (JSON.parse(text) as { committedGeneration?: unknown }).committedGeneration;
    return Number.isSafeInteger(value) ? value as number : null;
  } catch {
    return null;
  }
}

function isNotFound(err: unknown): boolean {
  return err instanceof PresyncError && err.code === ErrorCode.VOLUME_NOT_FOUND;
}

function isVolumeName(name: string): boolean {
  try {
    validateVolumeName(name);
    return true;
  } catch {
    return false;
  }
}
