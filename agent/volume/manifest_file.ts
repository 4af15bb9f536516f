import { type Bitmap, Blake3Hasher } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileHandle, FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { ENTRY_BYTES } from "./block_hashes.ts";

/** Entries read per piece when walking a manifest: 64 Ki entries, 2 MiB. */
export const MANIFEST_PIECE_ENTRIES = 64 * 1024;

/**
 * A manifest on disk: one 32-byte entry per block (BLAKE3 of the block, or zeros for an
 * all-zero block), block i at byte 32·i. A new manifest is a sparse file of zeros: a new
 * volume is all zeros. Walked in pieces, so a 1 TiB volume's 512 MiB manifest never sits in
 * memory.
 */
export class ManifestFile {
  readonly path: string;
  readonly blocks: number;
  #file: FileHandle;

  private constructor(path: string, blocks: number, file: FileHandle) {
    this.path = path;
    this.blocks = blocks;
    this.#file = file;
  }

  /**
   * Opens (or with `create`, creates) the manifest of a volume of `blocks` blocks. An
   * existing file of another size is refused as damaged.
   */
  static async open(
    fs: FileSystem,
    path: string,
    blocks: number,
    options: { create?: boolean } = {},
  ): Promise<ManifestFile> {
    const file = await io(
      `open manifest ${path}`,
      () => fs.open(path, { write: true, ...options }),
    );
    return ManifestFile.over(file, path, blocks, options);
  }

  /**
   * A manifest over an open `file` (named `path` in messages), which it then owns; with
   * `create`, an empty file is sized first. A file of another size is refused as damaged.
   */
  static async over(
    file: FileHandle,
    path: string,
    blocks: number,
    options: { create?: boolean } = {},
  ): Promise<ManifestFile> {
    const size = await io(`size manifest ${path}`, () => file.size());
    if (size !== blocks * ENTRY_BYTES) {
      if (options.create && size === 0) {
        await io(`size manifest ${path}`, () => file.truncate(blocks * ENTRY_BYTES));
      } else {
        file.close();
        throw new PresyncError(
          ErrorCode.STORE_CORRUPT,
          `manifest ${path} is ${size} bytes but the volume has ${blocks} blocks ` +
            `(${blocks * ENTRY_BYTES} bytes expected)`,
        );
      }
    }
    return new ManifestFile(path, blocks, file);
  }

  /**
   * Entries of blocks `first … first+count-1`, in `into` when given (its first
   * `count`·32 bytes: a walk of a large manifest reuses one buffer instead of allocating
   * a piece per read, which malloc would keep).
   */
  async read(first: number, count: number, into?: Uint8Array): Promise<Uint8Array> {
    if (into && into.length < count * ENTRY_BYTES) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `a read of ${count} manifest entries needs ${count * ENTRY_BYTES} bytes: received a ` +
          `buffer of ${into.length}`,
      );
    }
    const out = into ? into.subarray(0, count * ENTRY_BYTES) : new Uint8Array(count * ENTRY_BYTES);
    await io(`read manifest ${this.path}`, () => this.#file.read(first * ENTRY_BYTES, out));
    return out;
  }

  /** Writes entries for consecutive blocks starting at `first`. Not durable until sync(). */
  write(first: number, entries: Uint8Array): Promise<void> {
    return io(`write manifest ${this.path}`, () => this.#file.write(first * ENTRY_BYTES, entries));
  }

  /** Copies the entries of the blocks in `which` from `source` (same block count). */
  async copyFrom(source: ManifestFile, which: Bitmap): Promise<void> {
    let buffer: Uint8Array | undefined;
    for (const [start, length] of which.extents()) {
      for (let at = start; at < start + length; at += MANIFEST_PIECE_ENTRIES) {
        const count = Math.min(MANIFEST_PIECE_ENTRIES, start + length - at);
        buffer ??= new Uint8Array(MANIFEST_PIECE_ENTRIES * ENTRY_BYTES);
        await this.write(at, await source.read(at, count, buffer));
      }
    }
  }

  /** Makes written entries durable. */
  sync(): Promise<void> {
    return io(`sync manifest ${this.path}`, () => this.#file.sync());
  }

  /**
   * The volume's Merkle root: BLAKE3 over the manifest, that is BLAKE3's own Merkle tree
   * with the block entries as leaves (32 entries per leaf chunk). With `overlay`, the entries
   * of the blocks set in `overlay.which` are taken from `overlay.from` instead: the root the
   * volume will have once those staged blocks are applied.
   */
  async root(overlay?: { which: Bitmap; from: ManifestFile }): Promise<Uint8Array> {
    using hasher = new Blake3Hasher();
    const buffer = new Uint8Array(Math.min(MANIFEST_PIECE_ENTRIES, this.blocks) * ENTRY_BYTES);
    for (let first = 0; first < this.blocks; first += MANIFEST_PIECE_ENTRIES) {
      const count = Math.min(MANIFEST_PIECE_ENTRIES, this.blocks - first);
      const piece = await this.read(first, count, buffer);
      if (overlay) {
        for (const [start, length] of overlay.which.extents(first)) {
          if (start >= first + count) break;
          const end = Math.min(start + length, first + count);
          piece.set(await overlay.from.read(start, end - start), (start - first) * ENTRY_BYTES);
        }
      }
      hasher.update(piece);
    }
    return hasher.digest();
  }

  /** Closes the file. Idempotent. */
  close(): void {
    this.#file.close();
  }
}
