import { type Bitmap, type Extent } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { atomicWrite, mkdirDurable, readWhole } from "../fs/atomic_write.ts";
import type { FileHandle, FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { toHex } from "../hex.ts";
import { isZeroEntry } from "../volume/block_hashes.ts";
import { ManifestFile } from "../volume/manifest_file.ts";
import { diffImageWithManifest } from "../volume/image_diff.ts";
import {
  blockCount,
  blockLength,
  parseVolumeIdentity,
  type VolumeIdentity,
} from "../volume/volume_identity.ts";
import { KIND_DATA } from "./_staging_record.ts";
import type { ResumeInfo, StagedBlock, StageResult } from "../sync/destination.ts";
import { StagingArea } from "./staging_area.ts";

/** Format version of meta.json. */
const META_VERSION = 1;

/** What meta.json records: the committed state of a replica. */
export interface ReplicaMeta {
  identity: VolumeIdentity;
  /** Last committed generation; 0 for a new, all-zero replica. */
  committedGeneration: number;
  /** Merkle root of the replica at that generation (hex). */
  merkleRoot: string;
  /** When the source cut that generation (ms since the epoch); its age is the RPO. */
  cutTimeMs: number;
  /** When the destination committed it. */
  committedAtMs: number;
}

/** Result of {@linkcode ReplicaVolume.verify}. */
export interface VerifyReport {
  /** True when every check asked for passed. */
  ok: boolean;
  /** The replica's Merkle root, from its manifest (hex). */
  merkleRoot: string;
  /** Whether it equals the root that was asked for (absent when none was given). */
  rootMatches?: boolean;
  /** Blocks whose bytes on disk do not match the replica's own manifest (bit rot). */
  damaged: Extent[];
  /** Blocks that differ from the source image (only when one was given). */
  differsFromSource?: Extent[];
}

/** The commit record (docs/STORE.md): written before applying, replayed after a crash. */
interface CommitRecord {
  generation: number;
  merkleRoot: string;
  cutTimeMs: number;
}

/**
 * One replicated volume in a store directory: `image` (sparse raw), `manifest` (block
 * hashes), `meta.json` (committed state) and `staging/` (the generation being received).
 *
 * Opening runs recovery: a logged commit is replayed to the end; an unfinished staging area
 * is kept (cut back to its last flush) so the source can resume it. The image therefore
 * always equals the source at some committed generation's cut.
 */
export class ReplicaVolume {
  readonly dir: string;
  readonly #fs: FileSystem;
  #meta: ReplicaMeta;
  readonly #image: FileHandle;
  readonly #manifest: ManifestFile;
  #staging: StagingArea | null;

  private constructor(
    fs: FileSystem,
    dir: string,
    meta: ReplicaMeta,
    image: FileHandle,
    manifest: ManifestFile,
    staging: StagingArea | null,
  ) {
    this.#fs = fs;
    this.dir = dir;
    this.#meta = meta;
    this.#image = image;
    this.#manifest = manifest;
    this.#staging = staging;
  }

  /** Creates a new, all-zero replica of `identity` in `dir`. */
  static async init(fs: FileSystem, dir: string, identity: VolumeIdentity): Promise<ReplicaVolume> {
    if (await fs.exists(`${dir}/meta.json`)) {
      throw new PresyncError(
        ErrorCode.VOLUME_EXISTS,
        `volume ${identity.name} already exists in ${dir}`,
      );
    }
    await io(`create ${dir}`, () => mkdirDurable(fs, dir));
    const image = await io(`create ${dir}/image`, () => fs.open(`${dir}/image`, { create: true }));
    try {
      await io(`size ${dir}/image`, () => image.truncate(identity.sizeBytes));
      await image.sync();
    } finally {
      image.close();
    }
    const manifest = await ManifestFile.open(fs, `${dir}/manifest`, blockCount(identity), {
      create: true,
    });
    const root = await manifest.root();
    await manifest.sync();
    manifest.close();
    const meta: ReplicaMeta = {
      identity,
      committedGeneration: 0,
      merkleRoot: toHex(root),
      cutTimeMs: 0,
      committedAtMs: Date.now(),
    };
    await writeMeta(fs, dir, meta);
    return ReplicaVolume.open(fs, dir);
  }

  /** Opens the replica in `dir`, replaying or tidying after a crash. */
  static async open(fs: FileSystem, dir: string): Promise<ReplicaVolume> {
    const meta = await readReplicaMeta(fs, dir);
    const { identity } = meta;
    const image = await io(`open ${dir}/image`, () => fs.open(`${dir}/image`, { write: true }));
    const size = await image.size();
    if (size !== identity.sizeBytes) {
      image.close();
      throw new PresyncError(
        ErrorCode.STORE_CORRUPT,
        `${dir}/image is ${size} bytes but volume ${identity.name} is ${identity.sizeBytes}`,
      );
    }
    const manifest = await ManifestFile.open(fs, `${dir}/manifest`, blockCount(identity));
    const staging = await StagingArea.open(fs, `${dir}/staging`, identity);
    const volume = new ReplicaVolume(fs, dir, meta, image, manifest, staging);
    await volume.#recover();
    return volume;
  }

  /** The committed state. */
  get meta(): ReplicaMeta {
    return this.#meta;
  }

  get identity(): VolumeIdentity {
    return this.#meta.identity;
  }

  async #recover(): Promise<void> {
    const recordBytes = await readWhole(this.#fs, `${this.dir}/staging/COMMIT`);
    if (recordBytes && this.#staging) {
      const record = parseCommitRecord(recordBytes, this.dir);
      if (record.generation === this.#meta.committedGeneration + 1) {
        await this.#apply(record);
        return;
      }
      if (record.generation !== this.#meta.committedGeneration) {
        throw new PresyncError(
          ErrorCode.STORE_CORRUPT,
          `${this.dir}: commit record for generation ${record.generation} does not follow ` +
            `committed generation ${this.#meta.committedGeneration}`,
        );
      }
      // Applied and recorded in meta.json already: only the staging area is left over.
      await this.#dropStaging();
      return;
    }
    if (this.#staging && this.#staging.generation !== this.#meta.committedGeneration + 1) {
      // A staging area for a generation that can no longer commit: nothing to resume.
      await this.#dropStaging();
    } else if (
      !this.#staging &&
      (await this.#fs.exists(`${this.dir}/staging`) ||
        await this.#fs.exists(`${this.dir}/staging.dead`))
    ) {
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
   * same generation is already staged, it is kept (resume) and `dirty` must be the same set.
   */
  async beginGeneration(generation: number, dirty: Bitmap, cutTimeMs: number): Promise<void> {
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
      if (this.#staging.dirty.equals(dirty)) return;
      await this.#dropStaging();
    }
    this.#staging = await StagingArea.create(
      this.#fs,
      `${this.dir}/staging`,
      this.identity,
      generation,
      dirty,
      cutTimeMs,
    );
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

  /** Verifies and appends blocks of the staged generation (see StagingArea.stage). */
  stage(blocks: StagedBlock[]): Promise<StageResult> {
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
    await this.#prepare(staging);
    const root = toHex(await this.#manifest.root({ which: staging.dirty, from: staging.hashes }));
    if (root !== expectedRoot) {
      throw new PresyncError(
        ErrorCode.VERIFY_MISMATCH,
        `generation ${generation} of volume ${this.identity.name} would have Merkle root ` +
          `${root} but the source expects ${expectedRoot}; not committed`,
      );
    }
    const record: CommitRecord = { generation, merkleRoot: root, cutTimeMs: staging.cutTimeMs };
    await io(`write ${staging.dir}/COMMIT`, () =>
      atomicWrite(
        this.#fs,
        `${staging.dir}/COMMIT`,
        new TextEncoder().encode(JSON.stringify(record)),
      ));
    await this.#apply(record);
    return this.#meta;
  }

  /**
   * Before the commit record: checks every staged record against its hash, and claims the
   * disk space the apply will need, without changing what the replica holds. Blocks that
   * are holes (zero in the manifest) and will receive data get zeros written over their
   * zeros; the manifest entries of the generation are rewritten with their current values.
   * A full disk then fails here, with nothing applied, instead of halfway through the apply.
   */
  async #prepare(staging: StagingArea): Promise<void> {
    let zeros: Uint8Array | null = null;
    await staging.forEachRecord(async (header) => {
      if (header.kind !== KIND_DATA) return;
      if (!isZeroEntry(await this.#manifest.read(header.block, 1))) return;
      zeros ??= new Uint8Array(this.identity.blockSize);
      const length = blockLength(this.identity, header.block);
      await io(
        `allocate in ${this.dir}/image`,
        () => this.#image.write(header.block * this.identity.blockSize, zeros!.subarray(0, length)),
      );
    });
    await this.#manifest.copyFrom(this.#manifest, staging.dirty);
    await io(`sync ${this.dir}/image`, () => this.#image.sync());
    await this.#manifest.sync();
  }

  /** Applies the staged generation to the image and manifest, then records it. Idempotent. */
  async #apply(record: CommitRecord): Promise<void> {
    const staging = this.#requireStaging(record.generation);
    const { blockSize } = this.identity;
    let zeros: Uint8Array | null = null;
    await staging.forEachRecord(async (header, payload) => {
      const offset = header.block * blockSize;
      if (header.kind === KIND_DATA) {
        await io(`write ${this.dir}/image`, () => this.#image.write(offset, payload));
        return;
      }
      // A zero block: skip when the replica's block is zero already (keeps it sparse).
      const entry = await this.#manifest.read(header.block, 1);
      if (isZeroEntry(entry)) return;
      zeros ??= new Uint8Array(blockSize);
      const length = blockLength(this.identity, header.block);
      await io(
        `write ${this.dir}/image`,
        () => this.#image.write(offset, zeros!.subarray(0, length)),
      );
    });
    await io(`sync ${this.dir}/image`, () => this.#image.sync());
    await this.#manifest.copyFrom(staging.hashes, staging.dirty);
    await this.#manifest.sync();
    const meta: ReplicaMeta = {
      identity: this.identity,
      committedGeneration: record.generation,
      merkleRoot: record.merkleRoot,
      cutTimeMs: record.cutTimeMs,
      committedAtMs: Date.now(),
    };
    await writeMeta(this.#fs, this.dir, meta);
    this.#meta = meta;
    await this.#dropStaging();
  }

  /** Removes the staging area: renamed away first, so a crash never leaves half of one. */
  async #dropStaging(): Promise<void> {
    this.#staging?.close();
    this.#staging = null;
    const staging = `${this.dir}/staging`;
    const dead = `${this.dir}/staging.dead`;
    if (await this.#fs.exists(staging)) {
      await io(`remove ${staging}`, async () => {
        await this.#fs.remove(dead);
        await this.#fs.rename(staging, dead);
        await this.#fs.syncDir(this.dir);
      });
    }
    await io(`remove ${dead}`, () => this.#fs.remove(dead));
    await io(`sync ${this.dir}`, () => this.#fs.syncDir(this.dir));
  }

  /**
   * Checks the replica: its image against its own manifest (finds damaged blocks; skipped
   * with `rootOnly`, which reads only the manifest), its
   * Merkle root against `expectedRoot` when given, and its image against the source image
   * file `sourceImage` when given (both sites local).
   */
  async verify(
    options: { expectedRoot?: string; sourceImage?: string; rootOnly?: boolean } = {},
  ): Promise<VerifyReport> {
    const merkleRoot = toHex(await this.#manifest.root());
    const damaged = options.rootOnly
      ? []
      : await diffImageWithManifest(this.#image, this.#manifest, this.identity);
    const report: VerifyReport = { ok: damaged.length === 0, merkleRoot, damaged };
    if (options.expectedRoot !== undefined) {
      report.rootMatches = merkleRoot === options.expectedRoot;
      report.ok &&= report.rootMatches;
    }
    if (options.sourceImage !== undefined) {
      const source = await io(
        `open ${options.sourceImage}`,
        () => this.#fs.open(options.sourceImage!),
      );
      try {
        report.differsFromSource = await diffImageWithManifest(
          source,
          this.#manifest,
          this.identity,
        );
      } finally {
        source.close();
      }
      report.ok &&= report.differsFromSource.length === 0;
    }
    return report;
  }

  /** Closes files. Idempotent. */
  close(): void {
    this.#staging?.close();
    this.#staging = null;
    this.#image.close();
    this.#manifest.close();
  }
}

async function writeMeta(fs: FileSystem, dir: string, meta: ReplicaMeta): Promise<void> {
  const bytes = new TextEncoder().encode(
    JSON.stringify({ version: META_VERSION, ...meta }, null, 2),
  );
  await io(`write ${dir}/meta.json`, () => atomicWrite(fs, `${dir}/meta.json`, bytes));
}

/** Reads `meta.json` of the replica in `dir` (no recovery: see {@linkcode ReplicaVolume.open}). */
export async function readReplicaMeta(fs: FileSystem, dir: string): Promise<ReplicaMeta> {
  const bytes = await io(`read ${dir}/meta.json`, () => readWhole(fs, `${dir}/meta.json`));
  if (!bytes) {
    throw new PresyncError(
      ErrorCode.VOLUME_NOT_FOUND,
      `no replica volume in ${dir} (meta.json is missing)`,
    );
  }
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (value.version !== META_VERSION) throw new Error(`unknown version ${value.version}`);
    const meta: ReplicaMeta = {
      identity: parseVolumeIdentity(value.identity),
      committedGeneration: value.committedGeneration,
      merkleRoot: value.merkleRoot,
      cutTimeMs: value.cutTimeMs,
      committedAtMs: value.committedAtMs,
    };
    if (
      !Number.isSafeInteger(meta.committedGeneration) || meta.committedGeneration < 0 ||
      typeof meta.merkleRoot !== "string" || !/^[0-9a-f]{64}$/.test(meta.merkleRoot) ||
      !Number.isFinite(meta.cutTimeMs) || !Number.isFinite(meta.committedAtMs)
    ) {
      throw new Error("a field is missing or out of range");
    }
    return meta;
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `${dir}/meta.json is damaged (${cause instanceof Error ? cause.message : cause}); ` +
        `the replica cannot be trusted: restore meta.json or re-initialise the volume`,
      { cause },
    );
  }
}

function parseCommitRecord(bytes: Uint8Array, dir: string): CommitRecord {
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (
      Number.isSafeInteger(value.generation) && /^[0-9a-f]{64}$/.test(value.merkleRoot) &&
      Number.isFinite(value.cutTimeMs)
    ) {
      return value;
    }
  } catch {
    // Reported below.
  }
  throw new PresyncError(ErrorCode.STORE_CORRUPT, `${dir}/staging/COMMIT is damaged`);
}
