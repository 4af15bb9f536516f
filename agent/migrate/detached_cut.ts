import { ErrorCode, PresyncError } from "../errors.ts";
import type { Bitmap } from "../core/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { FileHandle } from "../fs/file_system.ts";
import type { Cut } from "../tracker.ts";

const fs = new DenoFileSystem();

/** The copy's file name in the volume's state directory. */
export const MIGRATION_COPY_FILE = "migration-final-cut.copy";

/** Blocks read from the original cut per call while copying. */
const COPY_BLOCKS = 16;

/**
 * Copies the dirty blocks of `cut` into the sparse file `path` (same offsets as on the
 * volume), releases `cut`, and returns a cut that reads the copy: same dirty set, same
 * `pointInTime`, no page masks (its blocks count as changed whole). A migration's final cut is detached this way before QEMU completes,
 * because completing ends what the original reads through: QEMU inactivates its disks,
 * which it refuses to do (`bdrv_inactivate_all() failed`) while the qmp tracker's fleecing
 * job still writes into its overlay. Local reads of the dirty blocks only, so the copy costs
 * what the dirty set costs, not the image. The copy is removed on `release()`.
 *
 * @throws {PresyncError} `IO` when the copy cannot be written (the original cut is released
 *   only once the copy is whole, so a failure leaves it as it was)
 */
export async function detachCut(
  cut: Cut,
  path: string,
  blockSize: number,
  sizeBytes: number,
): Promise<DetachedCut> {
  const file = await fs.open(path, { create: true });
  try {
    await file.truncate(0);
    for (const [start, length] of cut.dirty.extents()) {
      for (let first = start; first < start + length; first += COPY_BLOCKS) {
        const count = Math.min(COPY_BLOCKS, start + length - first);
        await file.write(first * blockSize, await cut.read(first, count));
      }
    }
  } catch (err) {
    file.close();
    await fs.remove(path).catch(() => {});
    throw err instanceof PresyncError ? err : new PresyncError(
      ErrorCode.IO,
      `cannot copy the final cut's blocks to ${path} (${err}); the migration is cancelled`,
      { cause: err },
    );
  }
  const detached = new DetachedCut(cut, file, path, blockSize, sizeBytes);
  await cut.release();
  return detached;
}

/** A cut whose dirty blocks were copied to a local file; see {@linkcode detachCut}. */
export class DetachedCut implements Cut {
  readonly dirty: Bitmap;
  readonly pointInTime: boolean;
  readonly #file: FileHandle;
  readonly #path: string;
  readonly #blockSize: number;
  readonly #sizeBytes: number;
  #released: Promise<void> | null = null;

  constructor(
    original: Cut,
    file: FileHandle,
    path: string,
    blockSize: number,
    sizeBytes: number,
  ) {
    this.dirty = original.dirty.clone();
    this.pointInTime = original.pointInTime;
    this.#file = file;
    this.#path = path;
    this.#blockSize = blockSize;
    this.#sizeBytes = sizeBytes;
  }

  /**
   * @throws {PresyncError} `INVALID_ARGUMENT` for a block outside the dirty set (never
   *   copied)
   */
  async read(first: number, count: number): Promise<Uint8Array> {
    for (let b = first; b < first + count; b++) {
      if (!this.dirty.get(b)) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          `block ${b} is not in the detached cut's dirty set, so it was not copied`,
        );
      }
    }
    const offset = first * this.#blockSize;
    const out = new Uint8Array(Math.min(count * this.#blockSize, this.#sizeBytes - offset));
    const n = await this.#file.read(offset, out);
    if (n < out.length) {
      throw new PresyncError(ErrorCode.IO, `the copy ${this.#path} ended at ${offset + n}`);
    }
    return out;
  }

  release(): Promise<void> {
    this.#released ??= (async () => {
      this.dirty.free();
      this.#file.close();
      await fs.remove(this.#path).catch(() => {});
    })();
    return this.#released;
  }
}
