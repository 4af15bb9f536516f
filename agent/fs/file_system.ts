/**
 * The file operations the replica store and the source state use, as a small interface,
 * so tests can swap in a layer that loses unsynced writes at a simulated power cut
 * (`fixtures/power_cut_fs.ts`). Paths are plain strings joined with `/`.
 *
 * Durability contract, as on Linux: data written to a file is durable after that file's
 * `sync()`; a created, renamed or removed directory entry is durable after `syncDir()` of
 * its directory.
 *
 * @module
 */

import type { FileExtent } from "./_libc.ts";

export type { FileExtent };

/**
 * An open file with positional I/O. Calls may overlap; overlapping ranges written by calls in
 * flight together land in any order (callers that need an order wait for the first call).
 */
export interface FileHandle {
  /** Reads up to `into.length` bytes at `offset`; returns how many (fewer only at the end). */
  read(offset: number, into: Uint8Array): Promise<number>;
  /** Writes all of `data` at `offset`, extending the file when needed. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Current size in bytes. */
  size(): Promise<number>;
  /** Sets the size; growing leaves a hole that reads as zeros. */
  truncate(size: number): Promise<void>;
  /** Makes everything written so far durable. */
  sync(): Promise<void>;
  /**
   * Claims storage for `length` bytes at `offset` without changing what they read
   * (`fallocate` mode 0), so later writes there cannot fail for lack of space. Resolves false
   * when the file system cannot (the caller writes zeros over the holes instead); a full disk
   * throws an `ENOSPC` error. Durable after `sync()`. Idempotent.
   */
  allocate(offset: number, length: number): Promise<boolean>;
  /**
   * Deallocates `length` bytes at `offset`: they read as zeros and the size stays. Resolves
   * false when the file system cannot (the caller writes zeros instead). Durable after
   * `sync()`. Idempotent.
   */
  punchHole(offset: number, length: number): Promise<boolean>;
  /**
   * The allocation of `[offset, offset+length)` as consecutive extents from `offset`, at most
   * `maxExtents` (the last may end early); `data` false is a hole, which reads as zeros.
   * Missing where the handle cannot tell holes from data (the caller reads everything).
   */
  extents?(offset: number, length: number, maxExtents?: number): Promise<FileExtent[]>;
  /** Closes the handle. Idempotent. */
  close(): void;
}

/** An advisory lock taken with {@linkcode FileSystem.tryLock}. */
export interface FileLock extends Disposable {
  /** Gives the lock up. Idempotent. */
  release(): void;
}

/** Options of {@linkcode FileSystem.open}. */
export interface OpenOptions {
  /** Open for writing too (default: read only). */
  write?: boolean;
  /** Create the file when missing (implies write). */
  create?: boolean;
}

/** Directory and file operations. Missing paths throw `Deno.errors.NotFound`. */
export interface FileSystem {
  /** Opens a file. */
  open(path: string, options?: OpenOptions): Promise<FileHandle>;
  /** Renames `from` to `to`, replacing `to` atomically when it exists. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file, or a directory and its contents. Missing paths are not an error. */
  remove(path: string): Promise<void>;
  /** Creates a directory and its parents. Existing directories are not an error. */
  mkdir(path: string): Promise<void>;
  /** Makes the entries of directory `path` (creations, renames, removals) durable. */
  syncDir(path: string): Promise<void>;
  /** Whether a file or directory exists at `path`. */
  exists(path: string): Promise<boolean>;
  /** Names in directory `path`. */
  readDir(path: string): Promise<string[]>;
  /**
   * Bytes of storage the file at `path` occupies, or a directory with everything in it (a
   * sparse file counts only its allocated parts). Missing paths count 0.
   */
  allocatedBytes(path: string): Promise<number>;
  /**
   * Takes an advisory lock on the file or directory at `path` without waiting: shared locks
   * coexist, an exclusive one excludes every other, also those of other processes and other
   * handles of this one (`flock`). Resolves null when a conflicting lock is held. Where the
   * platform cannot lock (no FFI), every lock is granted. Released when the process dies.
   */
  tryLock(path: string, mode: "shared" | "exclusive"): Promise<FileLock | null>;
}
