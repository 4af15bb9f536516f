import { type Bitmap, blockEntries } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { FileHandle, FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import type { KeptGeneration, ReplicaImage } from "../../agent/store/replica_backend.ts";
import { parseReplicaMeta, type ReplicaMeta } from "../../agent/store/replica_meta.ts";
import { ENTRY_BYTES } from "../../agent/volume/block_hashes.ts";
import { blockLength } from "../../agent/volume/volume_identity.ts";
import { findBlock, readUndoLog, UNDO_NAME, type UndoLog, writeUndoLog } from "./_undo_log.ts";

/** A volume directory's files, as the kept generations need them. */
export interface VolumeFiles {
  readonly name: string;
  readonly location: string;
  readMeta(): Promise<Uint8Array | null>;
}

/**
 * The kept generations of a directory volume (docs/STORE.md): the image holds the
 * committed generation; `undo/g<N>` holds, for each kept older generation N, the bytes
 * and manifest entries that generation N+1's commit overwrote, and N's metadata record.
 */
export class DirectoryGenerations {
  readonly #fs: FileSystem;
  readonly #volume: VolumeFiles;
  readonly #keep: number;
  readonly undoDir: string;

  constructor(fs: FileSystem, volume: VolumeFiles, keep: number) {
    this.#fs = fs;
    this.#volume = volume;
    this.#keep = keep;
    this.undoDir = `${volume.location}/undo`;
  }

  async #meta(): Promise<{ bytes: Uint8Array; meta: ReplicaMeta }> {
    const bytes = await this.#volume.readMeta();
    if (!bytes) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `no replica of volume ${this.#volume.name} in ${this.#volume.location}`,
      );
    }
    return { bytes, meta: parseReplicaMeta(bytes, this.#volume) };
  }

  /** Generations of the undo logs present, ascending. */
  async #logGenerations(): Promise<number[]> {
    if (!(await this.#fs.exists(this.undoDir))) return [];
    const names = await io(`list ${this.undoDir}`, () => this.#fs.readDir(this.undoDir));
    const found: number[] = [];
    for (const name of names) {
      const match = UNDO_NAME.exec(name);
      if (match) found.push(Number(match[1]));
    }
    return found.sort((a, b) => a - b);
  }

  /**
   * Before commit `generation` overwrites the image: saves generation - 1's bytes of
   * `blocks` (once; a replayed commit finds the log whole and keeps it), then deletes the
   * logs retention no longer keeps.
   */
  async saveUndo(generation: number, blocks: Bitmap): Promise<void> {
    const { bytes, meta } = await this.#meta();
    const fs = this.#fs;
    const dir = this.#volume.location;
    if (this.#keep > 1 && generation > 1 && meta.committedGeneration === generation - 1) {
      const image = await io(`open ${dir}/image`, () => fs.open(`${dir}/image`));
      try {
        const manifest = await io(`open ${dir}/manifest`, () => fs.open(`${dir}/manifest`));
        try {
          await writeUndoLog(
            fs,
            this.undoDir,
            generation - 1,
            bytes,
            meta.identity,
            blocks,
            image,
            manifest,
          );
        } finally {
          manifest.close();
        }
      } finally {
        image.close();
      }
    }
    const oldest = generation - this.#keep + 1;
    const drop = (await this.#logGenerations()).filter((g) => g < oldest);
    for (const g of drop) {
      await io(`remove ${this.undoDir}/g${g}`, () => fs.remove(`${this.undoDir}/g${g}`));
    }
    if (drop.length > 0) await io(`sync ${this.undoDir}`, () => fs.syncDir(this.undoDir));
  }

  /** The committed generation and the older ones whose chain of undo logs is whole. */
  async generations(): Promise<KeptGeneration[]> {
    const { meta } = await this.#meta();
    if (meta.committedGeneration === 0) return [];
    const kept: KeptGeneration[] = [{
      generation: meta.committedGeneration,
      sizeBytes: meta.identity.sizeBytes,
      createdAtMs: meta.committedAtMs,
    }];
    const logs = new Set(await this.#logGenerations());
    for (let g = meta.committedGeneration - 1; logs.has(g); g--) {
      const old = await this.#open(g, meta);
      old.file.close();
      const oldMeta = parseReplicaMeta(old.log.meta, this.#volume);
      kept.unshift({
        generation: g,
        sizeBytes: oldMeta.identity.sizeBytes,
        createdAtMs: oldMeta.committedAtMs,
      });
    }
    return kept;
  }

  async #open(generation: number, meta: ReplicaMeta): Promise<{ log: UndoLog; file: FileHandle }> {
    const opened = await readUndoLog(this.#fs, `${this.undoDir}/g${generation}`, meta.identity);
    if (opened.log.generation !== generation) {
      opened.file.close();
      throw new PresyncError(
        ErrorCode.STORE_CORRUPT,
        `undo log ${this.undoDir}/g${generation} names generation ${opened.log.generation}`,
      );
    }
    return opened;
  }

  async readGenerationMeta(generation: number): Promise<Uint8Array | null> {
    const { bytes, meta } = await this.#meta();
    if (generation === meta.committedGeneration) return bytes;
    if (!(await this.#chain(generation, meta))) return null;
    const old = await this.#open(generation, meta);
    old.file.close();
    return old.log.meta;
  }

  /** Whether logs generation..committed-1 are all there. */
  async #chain(generation: number, meta: ReplicaMeta): Promise<boolean> {
    if (!Number.isSafeInteger(generation) || generation < 1) return false;
    if (generation > meta.committedGeneration) return false;
    const logs = new Set(await this.#logGenerations());
    for (let g = generation; g < meta.committedGeneration; g++) if (!logs.has(g)) return false;
    return true;
  }

  /** Generation `generation`, read-only: the image with its undo logs laid over it. */
  async openGeneration(generation: number, head: ReplicaImage): Promise<ReplicaImage> {
    const { meta } = await this.#meta();
    if (generation === 0 || !(await this.#chain(generation, meta))) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `generation ${generation} of volume ${this.#volume.name} is not kept in ` +
          `${this.#volume.location}`,
      );
    }
    const view = new GenerationView(this, head, generation, meta);
    try {
      await view.refresh();
    } catch (err) {
      view.close();
      throw err;
    }
    return view;
  }

  /** Opens log `generation` for a view (no chain check). */
  openLog(generation: number, meta: ReplicaMeta): Promise<{ log: UndoLog; file: FileHandle }> {
    return this.#open(generation, meta);
  }

  logGenerations(): Promise<number[]> {
    return this.#logGenerations();
  }

  /**
   * Lays the logs of `generation` and later over the image, newest first. Each log is
   * checked whole against its manifest entries before any of it is written, then flushed,
   * then deleted. Idempotent: a log is deleted only once its bytes are durable in the image,
   * and applying one twice writes the same bytes.
   */
  async rollbackImage(generation: number, image: ReplicaImage): Promise<void> {
    const { meta } = await this.#meta();
    const logs = (await this.#logGenerations()).filter((g) => g >= generation).reverse();
    for (const g of logs) {
      const { log, file } = await this.#open(g, meta);
      try {
        const data = new Uint8Array(log.blockSize);
        for (const write of [false, true]) {
          for (let i = 0; i < log.blocks.length; i++) {
            const block = log.blocks[i];
            const bytes = data.subarray(0, blockLength(meta.identity, block));
            const at = log.dataOffset + i * log.blockSize;
            const n = await io(`read ${this.undoDir}/g${g}`, () => file.read(at, bytes));
            if (write) {
              await image.write(block * log.blockSize, bytes);
              continue;
            }
            const entry = log.entries.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
            const hash = blockEntries(bytes, log.blockSize);
            if (n !== bytes.length || !hash.every((byte, j) => byte === entry[j])) {
              throw new PresyncError(
                ErrorCode.STORE_CORRUPT,
                `undo log ${this.undoDir}/g${g}: block ${block} does not match its hash; ` +
                  `generation ${g} cannot be restored and nothing of it was written`,
              );
            }
          }
        }
      } finally {
        file.close();
      }
      await image.flush();
      const path = `${this.undoDir}/g${g}`;
      await io(`remove ${path}`, async () => {
        await this.#fs.remove(path);
        await this.#fs.syncDir(this.undoDir);
      });
    }
  }
}

/**
 * A kept generation, read-only: reads the image, then lays over it, block by block, the
 * oldest log at or after the generation that holds the block. Logs that commits write
 * while the view is open are picked up after each read of the image (a log is whole before
 * its commit overwrites anything), so the view stays that generation.
 */
class GenerationView implements ReplicaImage {
  readonly sizeBytes: number;
  readonly writeWindow = 1;
  readonly #owner: DirectoryGenerations;
  readonly #head: ReplicaImage;
  readonly #generation: number;
  readonly #meta: ReplicaMeta;
  readonly #logs: { log: UndoLog; file: FileHandle }[] = [];

  constructor(
    owner: DirectoryGenerations,
    head: ReplicaImage,
    generation: number,
    meta: ReplicaMeta,
  ) {
    this.#owner = owner;
    this.#head = head;
    this.#generation = generation;
    this.#meta = meta;
    this.sizeBytes = head.sizeBytes;
  }

  /** Opens the logs written since the last call. */
  async refresh(): Promise<void> {
    const next = this.#generation + this.#logs.length;
    const found = (await this.#owner.logGenerations()).filter((g) => g >= next);
    for (let i = 0; i < found.length; i++) {
      if (found[i] !== next + i) {
        throw new PresyncError(
          ErrorCode.VOLUME_NOT_FOUND,
          `generation ${this.#generation} of volume ${this.#meta.identity.name} was dropped ` +
            `by retention while exported (serve --keep counts generations; export it sooner ` +
            `or keep more)`,
        );
      }
      this.#logs.push(await this.#owner.openLog(found[i], this.#meta));
    }
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    await this.#head.read(offset, into);
    await this.refresh();
    const blockSize = this.#meta.identity.blockSize;
    const end = offset + into.length;
    for (let block = Math.floor(offset / blockSize); block * blockSize < end; block++) {
      for (const { log, file } of this.#logs) {
        const i = findBlock(log, block);
        if (i < 0) continue;
        const from = Math.max(offset, block * blockSize);
        const to = Math.min(end, (block + 1) * blockSize, this.sizeBytes);
        const bytes = into.subarray(from - offset, to - offset);
        const at = log.dataOffset + i * blockSize + (from - block * blockSize);
        const n = await io(`read undo log`, () => file.read(at, bytes));
        if (n !== bytes.length) {
          throw new PresyncError(
            ErrorCode.STORE_CORRUPT,
            `undo log of generation ${log.generation} is short`,
          );
        }
        break;
      }
    }
  }

  write(): Promise<void> {
    return Promise.reject(
      new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `generation ${this.#generation} of volume ${this.#meta.identity.name} is read-only`,
      ),
    );
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): void {
    for (const { file } of this.#logs) file.close();
    this.#logs.length = 0;
    this.#head.close();
  }
}
