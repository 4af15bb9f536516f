import { Bitmap, type Extent } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { atomicWrite, mkdirDurable, readWhole } from "../fs/atomic_write.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { ManifestFile } from "../volume/manifest_file.ts";
import { blockCount, parseVolumeIdentity, type VolumeIdentity } from "../volume/volume_identity.ts";

const STATE_VERSION = 1;

/** The generation cut but not yet committed at the destination. */
export interface PendingGeneration {
  generation: number;
  cutTimeMs: number;
  /** The blocks of the generation (owned by the state; do not free). */
  dirty: Bitmap;
  /**
   * Blocks the destination acknowledged as durably staged (as last recorded here); always a
   * subset of `dirty`.
   */
  acked: Bitmap;
  /**
   * Blocks folded into the generation after it was cut (an evacuation's final cut), already
   * part of `dirty`; absent when it was not folded (owned by the state; do not free).
   */
  fold?: Bitmap;
}

/**
 * What the source agent keeps about one volume across restarts, in a directory:
 * `state.json` (identity, committed generation), `manifest` (the block hashes the
 * destination has, or will have once the pending generation commits) and, while a
 * generation is in flight, `pending.json` + `pending.dirty` + `pending.acked` (and
 * `pending.fold` once an evacuation's final cut was folded into it).
 *
 * Restarting never forces a full resend: the pending generation resumes, sending only the
 * blocks the destination has not durably staged.
 */
export class SourceState {
  readonly dir: string;
  readonly identity: VolumeIdentity;
  readonly manifest: ManifestFile;
  readonly #fs: FileSystem;
  #committedGeneration: number;
  #pending: PendingGeneration | null;

  private constructor(
    fs: FileSystem,
    dir: string,
    identity: VolumeIdentity,
    committed: number,
    manifest: ManifestFile,
    pending: PendingGeneration | null,
  ) {
    this.#fs = fs;
    this.dir = dir;
    this.identity = identity;
    this.#committedGeneration = committed;
    this.manifest = manifest;
    this.#pending = pending;
  }

  /** Creates the state of a new volume: nothing sent yet, the destination all zeros. */
  static async init(fs: FileSystem, dir: string, identity: VolumeIdentity): Promise<SourceState> {
    if (await fs.exists(`${dir}/state.json`)) {
      throw new PresyncError(
        ErrorCode.VOLUME_EXISTS,
        `source state for ${identity.name} already exists in ${dir}`,
      );
    }
    await io(`create ${dir}`, () => mkdirDurable(fs, dir));
    const manifest = await ManifestFile.open(fs, `${dir}/manifest`, blockCount(identity), {
      create: true,
    });
    await manifest.sync();
    manifest.close();
    await writeState(fs, dir, identity, 0);
    return SourceState.open(fs, dir);
  }

  /**
   * Creates the state of a volume whose destination already holds generation `generation`
   * with the block hashes `manifest` (copied in): what a fail-back starts from, where the
   * sending site is the one that held the replica.
   */
  static async initAt(
    fs: FileSystem,
    dir: string,
    identity: VolumeIdentity,
    generation: number,
    manifest: ManifestFile,
  ): Promise<SourceState> {
    if (await fs.exists(`${dir}/state.json`)) {
      throw new PresyncError(
        ErrorCode.VOLUME_EXISTS,
        `source state for ${identity.name} already exists in ${dir}`,
      );
    }
    await io(`create ${dir}`, () => mkdirDurable(fs, dir));
    const copy = await ManifestFile.open(fs, `${dir}/manifest`, blockCount(identity), {
      create: true,
    });
    try {
      const all = new Bitmap(blockCount(identity));
      try {
        all.setRange(0, all.size);
        await copy.copyFrom(manifest, all);
      } finally {
        all.free();
      }
      await copy.sync();
    } finally {
      copy.close();
    }
    await writeState(fs, dir, identity, generation);
    return SourceState.open(fs, dir);
  }

  /** Opens the state in `dir`. */
  static async open(fs: FileSystem, dir: string): Promise<SourceState> {
    const bytes = await io(`read ${dir}/state.json`, () => readWhole(fs, `${dir}/state.json`));
    if (!bytes) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `no source state in ${dir} (state.json is missing)`,
      );
    }
    let identity: VolumeIdentity;
    let committed: number;
    try {
      const value = JSON.parse(new TextDecoder().decode(bytes));
      if (value.version !== STATE_VERSION) throw new Error(`unknown version ${value.version}`);
      identity = parseVolumeIdentity(value.identity);
      committed = value.committedGeneration;
      if (!Number.isSafeInteger(committed) || committed < 0) throw new Error("bad generation");
    } catch (cause) {
      throw new PresyncError(ErrorCode.STORE_CORRUPT, `${dir}/state.json is damaged: ${cause}`, {
        cause,
      });
    }
    const manifest = await ManifestFile.open(fs, `${dir}/manifest`, blockCount(identity));
    const pending = await readPending(fs, dir, identity, committed);
    return new SourceState(fs, dir, identity, committed, manifest, pending);
  }

  /** Last generation the destination committed (as far as this side knows). */
  get committedGeneration(): number {
    return this.#committedGeneration;
  }

  /** The generation in flight, or null. */
  get pending(): PendingGeneration | null {
    return this.#pending;
  }

  /** Records a new cut as the pending generation (before anything of it is sent). */
  async recordCut(dirty: Bitmap, cutTimeMs: number): Promise<PendingGeneration> {
    if (this.#pending) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `generation ${this.#pending.generation} of ${this.identity.name} is still in flight`,
      );
    }
    const generation = this.#committedGeneration + 1;
    const acked = new Bitmap(dirty.size);
    try {
      // A fold left over from a generation whose commit was recorded must not join this one.
      await io("remove pending.fold", () => this.#fs.remove(`${this.dir}/pending.fold`));
      await io(
        "write pending.dirty",
        () => atomicWrite(this.#fs, `${this.dir}/pending.dirty`, dirty.serialize()),
      );
      await io(
        "write pending.acked",
        () => atomicWrite(this.#fs, `${this.dir}/pending.acked`, acked.serialize()),
      );
      const json = new TextEncoder().encode(JSON.stringify({ generation, cutTimeMs }));
      // pending.json last: its presence means the pending generation is complete on disk.
      await io(
        "write pending.json",
        () => atomicWrite(this.#fs, `${this.dir}/pending.json`, json),
      );
    } catch (err) {
      acked.free();
      throw err;
    }
    this.#pending = { generation, cutTimeMs, dirty: dirty.clone(), acked };
    return this.#pending;
  }

  /**
   * Folds `redirtied` (a final cut) into the pending generation, before anything of it is
   * sent: its blocks join the dirty set and stop counting as acknowledged. `pending.fold`
   * is the one atomic step (written after the acknowledged set shrank, which only
   * under-counts if it is not reached). Once per generation.
   *
   * @throws {PresyncError} `GENERATION_MISMATCH` when nothing is pending or it was folded
   */
  async fold(redirtied: Bitmap): Promise<PendingGeneration> {
    const pending = this.#requirePending();
    if (pending.fold) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `generation ${pending.generation} of ${this.identity.name} was folded already`,
      );
    }
    using acked = pending.acked.clone().andNot(redirtied);
    await io(
      "write pending.acked",
      () => atomicWrite(this.#fs, `${this.dir}/pending.acked`, acked.serialize()),
    );
    await io(
      "write pending.fold",
      () => atomicWrite(this.#fs, `${this.dir}/pending.fold`, redirtied.serialize()),
    );
    pending.acked.andNot(redirtied);
    pending.dirty.or(redirtied);
    pending.fold = redirtied.clone();
    return pending;
  }

  /** Records runs of blocks the destination acknowledged as durably staged. */
  async recordAcked(runs: readonly Extent[]): Promise<void> {
    const pending = this.#requirePending();
    for (const [start, length] of runs) {
      if (!pending.dirty.hasRange(start, length)) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          `blocks ${start}–${start + length - 1} acknowledged for generation ` +
            `${pending.generation} of ${this.identity.name} are not all blocks of that generation`,
        );
      }
    }
    for (const [start, length] of runs) pending.acked.setRange(start, length);
    await io(
      "write pending.acked",
      () => atomicWrite(this.#fs, `${this.dir}/pending.acked`, pending.acked.serialize()),
    );
  }

  /** Records that the destination committed the pending generation. */
  async recordCommitted(generation: number): Promise<void> {
    const pending = this.#requirePending();
    if (pending.generation !== generation) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `generation ${generation} committed but ${pending.generation} was pending`,
      );
    }
    await writeState(this.#fs, this.dir, this.identity, generation);
    this.#committedGeneration = generation;
    await io("remove pending", async () => {
      await this.#fs.remove(`${this.dir}/pending.json`);
      await this.#fs.syncDir(this.dir);
      await this.#fs.remove(`${this.dir}/pending.dirty`);
      await this.#fs.remove(`${this.dir}/pending.acked`);
      await this.#fs.remove(`${this.dir}/pending.fold`);
    });
    pending.dirty.free();
    pending.acked.free();
    pending.fold?.free();
    this.#pending = null;
  }

  #requirePending(): PendingGeneration {
    if (!this.#pending) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `no generation of ${this.identity.name} is in flight`,
      );
    }
    return this.#pending;
  }

  /** Closes files and frees bitmaps. Idempotent. */
  close(): void {
    this.manifest.close();
    this.#pending?.dirty.free();
    this.#pending?.acked.free();
    this.#pending?.fold?.free();
    this.#pending = null;
  }
}

async function writeState(
  fs: FileSystem,
  dir: string,
  identity: VolumeIdentity,
  committedGeneration: number,
): Promise<void> {
  const json = JSON.stringify({ version: STATE_VERSION, identity, committedGeneration }, null, 2);
  await io(
    `write ${dir}/state.json`,
    () => atomicWrite(fs, `${dir}/state.json`, new TextEncoder().encode(json)),
  );
}

async function readPending(
  fs: FileSystem,
  dir: string,
  identity: VolumeIdentity,
  committed: number,
): Promise<PendingGeneration | null> {
  const json = await io(`read ${dir}/pending.json`, () => readWhole(fs, `${dir}/pending.json`));
  if (!json) return null;
  const blocks = blockCount(identity);
  try {
    const { generation, cutTimeMs } = JSON.parse(new TextDecoder().decode(json));
    // Left over from a crash right after the commit was recorded: nothing is pending.
    if (Number.isSafeInteger(generation) && generation <= committed) return null;
    if (generation !== committed + 1 || !Number.isFinite(cutTimeMs)) {
      throw new Error(`generation ${generation} cannot follow committed ${committed}`);
    }
    const dirtyBytes = await readWhole(fs, `${dir}/pending.dirty`);
    const ackedBytes = await readWhole(fs, `${dir}/pending.acked`);
    if (!dirtyBytes || !ackedBytes) throw new Error("pending.dirty or pending.acked is missing");
    const dirty = Bitmap.deserialize(dirtyBytes, blocks);
    // Only blocks of the generation count as acknowledged (acked ⊆ dirty, as recordAcked keeps it).
    const acked = Bitmap.deserialize(ackedBytes, blocks).and(dirty);
    const foldBytes = await readWhole(fs, `${dir}/pending.fold`);
    if (!foldBytes) return { generation, cutTimeMs, dirty, acked };
    const fold = Bitmap.deserialize(foldBytes, blocks);
    dirty.or(fold);
    return { generation, cutTimeMs, dirty, acked, fold };
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `the pending generation in ${dir} is damaged (${
        cause instanceof Error ? cause.message : cause
      })`,
      { cause },
    );
  }
}
