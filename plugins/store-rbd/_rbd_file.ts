/**
 * A `FileHandle` over an RBD image, so that the replica's manifest (32 bytes per block) is a
 * small image of its own beside the data image: positioned I/O, durable after `sync`.
 *
 * The commit protocol reads and writes the manifest one run of blocks at a time; on RBD each
 * would be a round trip. So the file keeps pieces of the image in memory (at most
 * {@linkcode MAX_CACHED_PIECES} of {@linkcode PIECE_BYTES}, 16 MiB): reads are served from
 * them, writes change them and reach the image at `sync` (all dirty pieces in flight at once),
 * or earlier when a dirty piece must make room. The pieces belong to the open image handle,
 * shared by every file on it in this process, so they all see each other's writes.
 *
 * @module
 */

import type { FileHandle } from "../../agent/fs/file_system.ts";
import type { RbdImage } from "./rbd_image.ts";

/** Bytes of one cached piece (2048 manifest entries). */
export const PIECE_BYTES = 64 * 1024;
/** Most pieces kept in memory per image handle. */
export const MAX_CACHED_PIECES = 256;
/** Piece writes in flight during a sync. */
const SYNC_WINDOW = 16;

interface Piece {
  bytes: Uint8Array;
  dirty: boolean;
}

/** The cached pieces of one image handle. */
class PieceCache {
  readonly #image: RbdImage;
  readonly sizeBytes: number;
  /** Least recently used first (a Map keeps insertion order; a use re-inserts). */
  readonly #pieces = new Map<number, Piece>();
  readonly #loading = new Map<number, Promise<Piece>>();
  /** Dirty pieces evicted and still being written: not read back before that ends. */
  readonly #evicting = new Map<number, Promise<void>>();

  constructor(image: RbdImage, sizeBytes: number) {
    this.#image = image;
    this.sizeBytes = sizeBytes;
  }

  #length(index: number): number {
    return Math.min(PIECE_BYTES, this.sizeBytes - index * PIECE_BYTES);
  }

  /**
   * Runs `use` on piece `index` as it is now (loaded first when needed). `use` is synchronous
   * and runs only while the piece is in the cache: one evicted while this waited is loaded
   * again, after its write, so no change lands in a copy that has left the cache.
   */
  async with(index: number, use: (piece: Piece) => void): Promise<void> {
    for (;;) {
      const piece = await this.#piece(index);
      if (this.#pieces.get(index) !== piece) continue;
      this.#pieces.delete(index);
      this.#pieces.set(index, piece);
      use(piece);
      return;
    }
  }

  async #piece(index: number): Promise<Piece> {
    const cached = this.#pieces.get(index);
    if (cached) return cached;
    const evicting = this.#evicting.get(index);
    if (evicting) await evicting.catch(() => {});
    let loading = this.#loading.get(index);
    if (!loading) {
      loading = (async () => {
        const bytes = new Uint8Array(this.#length(index));
        await this.#image.readInto(index * PIECE_BYTES, bytes);
        const piece = { bytes, dirty: false };
        this.#pieces.set(index, piece);
        await this.#evict();
        return piece;
      })().finally(() => this.#loading.delete(index));
      this.#loading.set(index, loading);
    }
    return await loading;
  }

  async #evict(): Promise<void> {
    while (this.#pieces.size > MAX_CACHED_PIECES) {
      const [index, piece] = this.#pieces.entries().next().value!;
      this.#pieces.delete(index);
      if (!piece.dirty) continue;
      const writing = this.#image.write(index * PIECE_BYTES, piece.bytes).catch((err) => {
        // Not written: the piece goes back, still dirty, and the error to the caller.
        if (!this.#pieces.has(index)) this.#pieces.set(index, piece);
        throw err;
      }).finally(() => this.#evicting.delete(index));
      this.#evicting.set(index, writing);
      await writing;
    }
  }

  /** Writes every dirty piece (several in flight), then flushes the image. */
  async sync(): Promise<void> {
    await Promise.all(this.#evicting.values());
    const dirty = [...this.#pieces].filter(([, piece]) => piece.dirty);
    for (let at = 0; at < dirty.length; at += SYNC_WINDOW) {
      await Promise.all(
        dirty.slice(at, at + SYNC_WINDOW).map(async ([index, piece]) => {
          const bytes = piece.bytes.slice();
          piece.dirty = false;
          try {
            await this.#image.write(index * PIECE_BYTES, bytes);
          } catch (err) {
            piece.dirty = true;
            throw err;
          }
        }),
      );
    }
    await this.#image.flush();
  }
}

const caches = new WeakMap<RbdImage, PieceCache>();

/** An RBD image seen as a fixed-size file; `release` runs once on close. */
export class RbdFile implements FileHandle {
  readonly #cache: PieceCache;
  readonly #release: () => void;
  #closed = false;

  private constructor(cache: PieceCache, release: () => void) {
    this.#cache = cache;
    this.#release = release;
  }

  /** A file over `image` (its pieces shared with the other files on the same handle). */
  static async over(image: RbdImage, release: () => void): Promise<RbdFile> {
    let cache = caches.get(image);
    if (!cache) {
      cache = new PieceCache(image, (await image.stat()).sizeBytes);
      caches.set(image, cache);
    }
    return new RbdFile(cache, release);
  }

  async read(offset: number, into: Uint8Array): Promise<number> {
    const end = Math.min(offset + into.length, this.#cache.sizeBytes);
    for (let at = offset; at < end;) {
      const index = Math.floor(at / PIECE_BYTES);
      const from = at - index * PIECE_BYTES;
      const take = Math.min(PIECE_BYTES - from, end - at);
      await this.#cache.with(index, (piece) => {
        into.set(piece.bytes.subarray(from, from + take), at - offset);
      });
      at += take;
    }
    return Math.max(0, end - offset);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (offset + data.length > this.#cache.sizeBytes) {
      throw new RangeError(
        `write of ${data.length} bytes at ${offset} goes past the end of the manifest image ` +
          `(${this.#cache.sizeBytes} bytes)`,
      );
    }
    for (let at = offset; at < offset + data.length;) {
      const index = Math.floor(at / PIECE_BYTES);
      const from = at - index * PIECE_BYTES;
      const take = Math.min(PIECE_BYTES - from, offset + data.length - at);
      await this.#cache.with(index, (piece) => {
        piece.bytes.set(data.subarray(at - offset, at - offset + take), from);
        piece.dirty = true;
      });
      at += take;
    }
  }

  size(): Promise<number> {
    return Promise.resolve(this.#cache.sizeBytes);
  }

  truncate(size: number): Promise<void> {
    if (size === this.#cache.sizeBytes) return Promise.resolve();
    return Promise.reject(
      new RangeError(
        `the manifest image is ${this.#cache.sizeBytes} bytes and never resized: asked for ${size}`,
      ),
    );
  }

  sync(): Promise<void> {
    return this.#cache.sync();
  }

  allocate(): Promise<boolean> {
    return Promise.resolve(false);
  }

  punchHole(): Promise<boolean> {
    return Promise.resolve(false);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release();
  }
}
