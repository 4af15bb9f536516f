import { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileLock } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { toHex } from "../hex.ts";
import { isZeroEntry } from "../volume/block_hashes.ts";
import type { ManifestFile } from "../volume/manifest_file.ts";
import { openManifest } from "./open_manifest.ts";
import { blockCount, blockLength, type VolumeIdentity } from "../volume/volume_identity.ts";
import { KIND_DATA, KIND_PATCH } from "./_staging_record.ts";
import { decodePatch } from "../codec/block_patch.ts";
import { WriteWindow } from "./_write_window.ts";
import {
  canClaimSpace,
  keepsSnapshots,
  type ReplicaImage,
  reservesNoSpace,
  savesUndo,
  type VolumeBackend,
} from "./replica_backend.ts";
import {
  type CommitRecord,
  encodeCommitRecord,
  parseCommitRecord,
  readReplicaMeta,
  type ReplicaMeta,
  writeReplicaMeta,
} from "./replica_meta.ts";
import type {
  BeginOptions,
  ResumeInfo,
  StagedBlock,
  StagedPatch,
  StageResult,
} from "../sync/destination.ts";
import { StagingArea, zeroRange } from "./staging_area.ts";
import { finishRollback } from "./replica_rollback.ts";
import { type VerifyOptions, verifyReplica, type VerifyReport } from "./_verify_replica.ts";

export type { ReplicaMeta } from "./replica_meta.ts";
export type { VerifyOptions, VerifyReport } from "./_verify_replica.ts";

/**
 * One replicated volume of a store, over its back end: the image, the manifest (block
 * hashes), the metadata (committed state) and the staging area (the generation being
 * received). This is the commit protocol of docs/STORE.md; the back end only keeps bytes.
 *
 * Opening runs recovery: a logged commit is replayed to the end; an unfinished staging area
 * is kept (cut back to its last flush) so the source can resume it. The image therefore
 * always equals the source at some committed generation's cut — except while the replica
 * is *initialising* (seeding its first generation in place, with nothing committed to
 * protect), when it is not served or verified at all.
 */
export class ReplicaVolume {
  readonly #backend: VolumeBackend;
  #meta: ReplicaMeta;
  readonly #image: ReplicaImage;
  readonly #manifest: ManifestFile;
  readonly #lock: FileLock;
  #staging: StagingArea | null = null;
  /** A staged generation folds (`beginGeneration` with `fold`). */
  readonly folds = true;

  private constructor(
    backend: VolumeBackend,
    meta: ReplicaMeta,
    image: ReplicaImage,
    manifest: ManifestFile,
    lock: FileLock,
  ) {
    this.#backend = backend;
    this.#meta = meta;
    this.#image = image;
    this.#manifest = manifest;
    this.#lock = lock;
  }

  /**
   * Writes the metadata of a new, all-zero replica of `identity` into `backend` (whose
   * `create` made its image and manifest), then opens it.
   */
  static async init(backend: VolumeBackend, identity: VolumeIdentity): Promise<ReplicaVolume> {
    const manifest = await openManifest(backend, blockCount(identity), "read");
    let root: Uint8Array;
    try {
      root = await manifest.root();
    } finally {
      manifest.close();
    }
    await io(`write ${backend.location} metadata`, () =>
      writeReplicaMeta(backend, {
        identity,
        committedGeneration: 0,
        merkleRoot: toHex(root),
        cutTimeMs: 0,
        committedAtMs: Date.now(),
      }));
    return ReplicaVolume.open(backend);
  }

  /**
   * Opens the replica in `backend`, replaying or tidying after a crash. Holds the volume's
   * shared lock until `close()`.
   *
   * @throws {PresyncError} `STORE_BUSY` while the volume is being deleted
   */
  static async open(backend: VolumeBackend): Promise<ReplicaVolume> {
    const lock = await lockShared(backend);
    try {
      // A rollback interrupted by a crash is finished before anything else (its record says so).
      await finishRollback(backend);
      const meta = await readReplicaMeta(backend);
      const { identity } = meta;
      const image = await backend.openImage("write");
      if (image.sizeBytes !== identity.sizeBytes) {
        image.close();
        throw new PresyncError(
          ErrorCode.STORE_CORRUPT,
          `${backend.location}: the image is ${image.sizeBytes} bytes but volume ` +
            `${identity.name} is ${identity.sizeBytes}`,
        );
      }
      let manifest: ManifestFile;
      try {
        manifest = await openManifest(backend, blockCount(identity), "write");
      } catch (err) {
        image.close();
        throw err;
      }
      const volume = new ReplicaVolume(backend, meta, image, manifest, lock);
      try {
        volume.#staging = await StagingArea.open(backend.staging, identity, image);
        await volume.#recover();
      } catch (err) {
        volume.close();
        throw err;
      }
      return volume;
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /** The committed state. */
  get meta(): ReplicaMeta {
    return this.#meta;
  }

  get identity(): VolumeIdentity {
    return this.#meta.identity;
  }

  /** Where the replica is (for messages). */
  get location(): string {
    return this.#backend.location;
  }

  /**
   * Whether the replica is seeding its first generation in place: its image is then
   * neither all zeros nor a committed generation, so it is not exported or verified.
   */
  get initialising(): boolean {
    return this.#staging?.inPlace === true;
  }

  async #recover(): Promise<void> {
    const staging = this.#staging;
    const recordBytes = staging &&
      await io(`read ${staging.location}/COMMIT`, () => this.#backend.staging.read("commit"));
    if (recordBytes && staging) {
      const record = parseCommitRecord(recordBytes, staging.location);
      if (record.generation === this.#meta.committedGeneration + 1) {
        await this.#apply(record);
        return;
      }
      if (record.generation !== this.#meta.committedGeneration) {
        throw new PresyncError(
          ErrorCode.STORE_CORRUPT,
          `${this.location}: commit record for generation ${record.generation} does not ` +
            `follow committed generation ${this.#meta.committedGeneration}`,
        );
      }
      // Applied and recorded in the metadata already: only pruning (when the snapshot
      // outlived the metadata write) and the staging area are left over.
      if (keepsSnapshots(this.#image)) await this.#image.pruneGenerations(record.generation);
      await this.#dropStaging();
      return;
    }
    if (staging && staging.generation !== this.#meta.committedGeneration + 1) {
      // A staging area for a generation that can no longer commit: nothing to resume.
      await this.#discardUncommitted();
    } else if (!staging && await this.#backend.staging.exists()) {
      // Staging was being created or removed when the process died.
      await this.#dropStaging();
    }
  }

  /** The committed generation and what is staged of the next one. */
  resumeInfo(): ResumeInfo {
    const staging = this.#staging;
    return {
      identity: this.identity,
      committedGeneration: this.#meta.committedGeneration,
      merkleRoot: this.#meta.merkleRoot,
      cutTimeMs: this.#meta.cutTimeMs,
      staged: staging ? { generation: staging.generation, received: staging.received() } : null,
    };
  }

  /**
   * Starts receiving `generation` (the committed one + 1) with the given dirty set. When the
   * same generation is already staged, it is kept (resume) and `dirty` must be the same set,
   * or, with `options.fold`, the staged set with `fold` added: the staged generation is then folded
   * (`StagingArea.fold`: what it staged of blocks not in `fold` still counts). Any other set
   * starts the generation anew.
   * The first generation of a new replica is staged in place (seeding, docs/STORE.md),
   * after claiming the space its blocks need where the back end can: a full disk fails here.
   */
  async beginGeneration(
    generation: number,
    dirty: Bitmap,
    cutTimeMs: number,
    options: BeginOptions = {},
  ): Promise<void> {
    const { fold } = options;
    const expected = this.#meta.committedGeneration + 1;
    if (generation !== expected) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `volume ${this.identity.name}: generation ${generation} cannot follow committed ` +
          `generation ${this.#meta.committedGeneration} (expected ${expected})`,
      );
    }
    if (dirty.size !== blockCount(this.identity)) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `generation ${generation} has ${dirty.size} blocks but the volume has ${
          blockCount(this.identity)
        }`,
      );
    }
    if (this.#staging) {
      // A fold first: its blocks may all be in the staged set already.
      if (fold && this.#canFold(this.#staging, dirty, fold)) {
        await this.#staging.fold(fold);
        return;
      }
      if (this.#staging.dirty.equals(dirty)) return;
      await this.#discardUncommitted();
    }
    const inPlace = this.#meta.committedGeneration === 0;
    if (inPlace) await this.#claim(dirty);
    this.#staging = await StagingArea.create(
      this.#backend.staging,
      this.identity,
      { generation, cutTimeMs, inPlace },
      dirty,
      this.#image,
    );
  }

  /** Whether `staging` folds into `dirty` with `fold`: once, and to exactly their union. */
  #canFold(staging: StagingArea, dirty: Bitmap, fold: Bitmap): boolean {
    if (staging.folded || fold.size !== dirty.size) return false;
    using union = staging.dirty.clone().or(fold);
    return union.equals(dirty);
  }

  /** Claims the image space of `blocks` where the back end can (else nothing: see #prepare). */
  async #claim(blocks: Bitmap): Promise<boolean> {
    const image = this.#image;
    if (!canClaimSpace(image)) return false;
    const { blockSize, sizeBytes } = this.identity;
    for (const [start, length] of blocks.extents()) {
      const offset = start * blockSize;
      const end = Math.min((start + length) * blockSize, sizeBytes);
      if (!(await image.claim(offset, end - offset))) return false;
    }
    return true;
  }

  #requireStaging(generation?: number): StagingArea {
    const staging = this.#staging;
    if (!staging || (generation !== undefined && staging.generation !== generation)) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `volume ${this.identity.name}: generation ${generation ?? "(any)"} is not being staged`,
      );
    }
    return staging;
  }

  /** Verifies and stages blocks of the staged generation (see StagingArea.stage). */
  stage(blocks: (StagedBlock | StagedPatch)[]): Promise<StageResult> {
    return this.#requireStaging().stage(blocks);
  }

  /**
   * The bytes of `block` of `generation` when that generation is being staged and the block
   * arrived (see `StagingArea.readStaged`); null otherwise.
   */
  readStaged(generation: number, block: number): Promise<Uint8Array | null> {
    const staging = this.#staging;
    if (!staging || staging.generation !== generation) return Promise.resolve(null);
    return staging.readStaged(block);
  }

  /**
   * The copy a patch of `block` is laid over (`StagingArea.stage`), which page digests
   * describe: for a block a fold re-dirtied, its copy staged before the fold
   * (`StagingArea.readSuperseded`) when at hand, else {@linkcode readCommitted}.
   */
  async readPatchBase(block: number): Promise<Uint8Array> {
    return await this.#staging?.readSuperseded(block) ?? await this.readCommitted(block);
  }

  /**
   * The bytes of `block` in the image (its last block may be short): the committed copy,
   * except while seeding in place, where a block already received reads as received.
   */
  async readCommitted(block: number): Promise<Uint8Array> {
    const { blockSize } = this.identity;
    if (!Number.isInteger(block) || block < 0 || block >= blockCount(this.identity)) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `block ${block} is outside volume ${this.identity.name} (${
          blockCount(this.identity)
        } blocks)`,
      );
    }
    const data = new Uint8Array(blockLength(this.identity, block));
    await io(`read ${this.location} image`, () => this.#image.read(block * blockSize, data));
    return data;
  }

  /** Makes staged blocks durable; only then may they be acknowledged to the source. */
  flush(): Promise<void> {
    return this.#requireStaging().flush();
  }

  /**
   * Commits `generation`: checks that every block of its dirty set is staged and intact and
   * that the resulting Merkle root equals `expectedRoot` (hex), then writes the commit
   * record and applies. On `VERIFY_MISMATCH` or `STORE_CORRUPT` nothing is applied.
   */
  async commit(generation: number, expectedRoot: string): Promise<ReplicaMeta> {
    const staging = this.#requireStaging(generation);
    if (!staging.isComplete()) {
      using missing = staging.dirty.clone().andNot(staging.received());
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `generation ${generation} is incomplete: ${missing.popcount()} of ` +
          `${staging.dirty.popcount()} blocks not yet staged`,
      );
    }
    await staging.flush();
    if (!staging.inPlace) await this.#prepare(staging);
    const root = toHex(await this.#manifest.root({ which: staging.dirty, from: staging.hashes }));
    if (root !== expectedRoot) {
      throw new PresyncError(
        ErrorCode.VERIFY_MISMATCH,
        `generation ${generation} of volume ${this.identity.name} would have Merkle root ` +
          `${root} but the source expects ${expectedRoot}; not committed`,
      );
    }
    const record: CommitRecord = { generation, merkleRoot: root, cutTimeMs: staging.cutTimeMs };
    await io(
      `write ${staging.location}/COMMIT`,
      () => this.#backend.staging.write("commit", encodeCommitRecord(record)),
    );
    await this.#apply(record);
    return this.#meta;
  }

  /**
   * Before the commit record: checks every staged record against its hash, and claims the
   * disk space the apply will need, without changing what the replica holds. Blocks that
   * are holes (zero in the manifest) and will receive data are claimed (`fallocate`), or
   * where the back end cannot, get zeros written over their zeros; the manifest entries of
   * the generation are rewritten with their current values. A full disk then fails here,
   * with nothing applied, instead of halfway through the apply. An image that cannot
   * reserve space at all (`NoSpaceReservation`, RBD) gets no claim and no zeros, and its
   * manifest entries are not rewritten: its log is only checked.
   */
  async #prepare(staging: StagingArea): Promise<void> {
    using holes = new Bitmap(staging.dirty.size);
    const reserve = !reservesNoSpace(this.#image);
    await staging.forEachRecord(async (header) => {
      // A patch may land in a hole: its block was zero when committed.
      if (!reserve || (header.kind !== KIND_DATA && header.kind !== KIND_PATCH)) return;
      if (isZeroEntry(await this.#manifest.read(header.block, 1))) holes.set(header.block);
    });
    if (reserve && !(await this.#claim(holes))) {
      // Zeros over zeros, through the image's write window (each write a round trip on RBD).
      const zeros = new Uint8Array(this.identity.blockSize);
      const window = new WriteWindow(this.#image.writeWindow);
      try {
        for (const [start, length] of holes.extents()) {
          for (let block = start; block < start + length; block++) {
            const data = zeros.subarray(0, blockLength(this.identity, block));
            await window.add(() => this.#image.write(block * this.identity.blockSize, data));
          }
        }
        await window.drain();
      } finally {
        await window.settle();
      }
    }
    // Nothing was written into an image that reserves no space, and its manifest, kept by the
    // same storage, cannot be claimed ahead either: only the check above was needed.
    if (!reserve) return;
    await this.#manifest.copyFrom(this.#manifest, staging.dirty);
    await this.#image.flush();
    await this.#manifest.sync();
  }

  /**
   * Applies the staged generation to the image (nothing to write when it was staged in
   * place) and manifest, then records it. Idempotent.
   */
  async #apply(record: CommitRecord): Promise<void> {
    const staging = this.#requireStaging(record.generation);
    const { blockSize } = this.identity;
    // What the apply overwrites is saved first where the back end keeps generations so.
    if (!staging.inPlace && savesUndo(this.#backend)) {
      await this.#backend.saveUndo(record.generation, staging.dirty);
    }
    const window = new WriteWindow(this.#image.writeWindow);
    try {
      await staging.forEachRecord(async (header, payload) => {
        const offset = header.block * blockSize;
        if (header.kind === KIND_DATA) {
          // The payload stays valid while the write is in flight (forEachRecord).
          await window.add(() => this.#image.write(offset, payload));
          return;
        }
        if (header.kind === KIND_PATCH) {
          // Only the runs: the rest of the block is its committed copy, which the patch was
          // checked over when staged (the image changes only here). Idempotent on replay.
          const length = blockLength(this.identity, header.block);
          for (const run of decodePatch(payload, length)) {
            await window.add(() => this.#image.write(offset + run.offset, run.bytes));
          }
          return;
        }
        // A zero block: skip when the replica's block is zero already (keeps it sparse).
        if (isZeroEntry(await this.#manifest.read(header.block, 1))) return;
        const length = blockLength(this.identity, header.block);
        await window.add(() => zeroRange(this.#image, offset, length));
      });
      await window.drain();
    } finally {
      await window.settle();
    }
    await this.#image.flush();
    // The snapshot and the manifest's new entries both follow the flushed image and precede
    // the metadata, and neither depends on the other: they run together. (A replay finds the
    // image applied wherever the manifest's zero entries already say so.)
    const image = this.#image;
    await settleAll([
      keepsSnapshots(image) ? image.snapshotGeneration(record.generation) : Promise.resolve(),
      this.#manifest.copyFrom(staging.hashes, staging.dirty).then(() => this.#manifest.sync()),
    ]);
    const meta: ReplicaMeta = {
      identity: this.identity,
      committedGeneration: record.generation,
      merkleRoot: record.merkleRoot,
      cutTimeMs: record.cutTimeMs,
      committedAtMs: Date.now(),
    };
    // Pruning may come before or after the metadata (either order is a state recovery
    // finishes), but before the staging area goes: recovery prunes while COMMIT is there.
    await settleAll([
      io(`write ${this.location} metadata`, () => writeReplicaMeta(this.#backend, meta)),
      keepsSnapshots(image) ? image.pruneGenerations(record.generation) : Promise.resolve(),
    ]);
    this.#meta = meta;
    await this.#dropStaging();
  }

  /**
   * Drops a staging area whose generation will not commit. One staged in place wrote into
   * the image: its received set is forgotten first (durably), then every block of its dirty
   * set is zeroed again, so the image is back to generation 0 (all zeros) before the area
   * goes; a crash in between finds an area to resume from scratch, or discards it again.
   */
  async #discardUncommitted(): Promise<void> {
    const staging = this.#staging;
    if (staging?.inPlace) {
      await staging.forgetReceived();
      const { blockSize, sizeBytes } = this.identity;
      for (const [start, length] of staging.dirty.extents()) {
        const offset = start * blockSize;
        await zeroRange(
          this.#image,
          offset,
          Math.min((start + length) * blockSize, sizeBytes) - offset,
        );
      }
      await this.#image.flush();
    }
    await this.#dropStaging();
  }

  /** Removes the staging area (crash-safe: see `StagingBackend.discard`). */
  async #dropStaging(): Promise<void> {
    this.#staging?.close();
    this.#staging = null;
    await io(`remove ${this.#backend.staging.location}`, () => this.#backend.staging.discard());
  }

  /**
   * Checks the replica: its image against its own manifest (finds damaged blocks; skipped
   * with `rootOnly`, which reads only the manifest), its Merkle root against `expectedRoot`
   * when given, and its image against the local source image file `sourceImage` when given
   * (both sites on this machine).
   *
   * @throws {PresyncError} `VOLUME_INITIALISING` while the replica seeds its first generation
   */
  async verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    if (this.initialising) throw initialisingError(this.identity.name, "verified");
    return await verifyReplica(this.#image, this.#manifest, this.identity, options);
  }

  /** Closes everything and gives up the volume's lock. Idempotent. */
  close(): void {
    this.#staging?.close();
    this.#staging = null;
    this.#manifest.close();
    this.#image.close();
    this.#lock.release();
  }
}

/** Waits for every promise to settle, then throws the first failure (none left running). */
async function settleAll(promises: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  for (const result of results) if (result.status === "rejected") throw result.reason;
}

async function lockShared(backend: VolumeBackend): Promise<FileLock> {
  const lock = await backend.lock("shared");
  if (!lock) {
    throw new PresyncError(
      ErrorCode.STORE_BUSY,
      `volume ${backend.name} in ${backend.location} is being deleted; try again later`,
      { retryable: true },
    );
  }
  return lock;
}

/** `VOLUME_INITIALISING`: the replica has no committed generation to serve yet. */
export function initialisingError(name: string, what: string): PresyncError {
  return new PresyncError(
    ErrorCode.VOLUME_INITIALISING,
    `volume ${name} is initialising (its first generation is being seeded) and cannot be ` +
      `${what} before that generation commits; wait for the first sync to finish`,
    { retryable: true },
  );
}
