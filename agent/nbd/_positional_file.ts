import * as fs from "node:fs";
import { ErrorCode, PresyncError } from "../errors.ts";
import {
  ENOSPC,
  ENOSYS,
  EOPNOTSUPP,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fdExtents,
  type FileExtent,
  libc,
} from "../fs/_libc.ts";
import { io, toIoError } from "../fs/io_error.ts";

export type { FileExtent };

/** The byte counts node:fs hands its callbacks. */
type Done = (err: Error | null, bytes: number) => void;

/**
 * Positional reads and writes on one open file, safe to call concurrently. Deno's own
 * `FsFile` has one cursor (seek + read would have to run under a lock), so this goes through
 * `node:fs`, whose `read`/`write` with a position are `pread64`/`pwrite64` in Deno 2.9.6
 * (checked with strace). Small ones run synchronously (see `SYNC_IO_MAX_BYTES`), so a
 * page-cache miss there holds the event loop for one device access.
 *
 * No call waits for another, except `close()`, which waits for the
 * calls in flight. Overlapping reads and writes issued together may land in any order;
 * callers that need an order wait for the first call before issuing the second.
 */
export class PositionalFile {
  readonly path: string;
  readonly #fd: number;
  #inflight = 0;
  #idle: (() => void) | null = null;
  #closed = false;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /** Opens `path` (read-write unless `readOnly`; created when `create`). */
  static async open(
    path: string,
    options: { readOnly?: boolean; create?: boolean } = {},
  ): Promise<PositionalFile> {
    const flags = options.readOnly
      ? fs.constants.O_RDONLY
      : fs.constants.O_RDWR | (options.create ? fs.constants.O_CREAT : 0);
    const fd = await io(
      `open ${path}`,
      () =>
        new Promise<number>((resolve, reject) =>
          fs.open(path, flags, 0o644, (err, fd) => err ? reject(err) : resolve(fd))
        ),
    );
    return new PositionalFile(path, fd);
  }

  async #run<T>(what: string, fn: (fd: number) => Promise<T>): Promise<T> {
    if (this.#closed) {
      throw new PresyncError(ErrorCode.IO, `${what} ${this.path}: the file is closed`);
    }
    this.#inflight++;
    try {
      return await io(`${what} ${this.path}`, () => fn(this.#fd));
    } finally {
      if (--this.#inflight === 0) this.#idle?.();
    }
  }

  /** Reads `into.length` bytes at `offset`; bytes past the end of the file read as zeros. */
  read(offset: number, into: Uint8Array): Promise<Uint8Array> {
    // A small read completes synchronously: no async wrappers, no microtask hops.
    if (into.length <= SYNC_IO_MAX_BYTES && !this.#closed) {
      try {
        let at = 0;
        while (at < into.length) {
          const n = fs.readSync(this.#fd, into, at, into.length - at, offset + at);
          if (n === 0) break;
          at += n;
        }
        into.fill(0, at);
        return Promise.resolve(into);
      } catch (err) {
        return Promise.reject(toIoError(err, `read ${this.path}`));
      }
    }
    return this.#run("read", async (fd) => {
      let at = 0;
      while (at < into.length) {
        const n = await pread(fd, into.subarray(at), offset + at);
        if (n === 0) break;
        at += n;
      }
      into.fill(0, at);
      return into;
    });
  }

  /** Writes all of `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void> {
    // A small write completes synchronously, as a small read does.
    if (data.length <= SYNC_IO_MAX_BYTES && !this.#closed) {
      try {
        for (let at = 0; at < data.length;) {
          at += fs.writeSync(this.#fd, data, at, data.length - at, offset + at);
        }
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(toIoError(err, `write ${this.path}`));
      }
    }
    return this.#run("write", async (fd) => {
      for (let at = 0; at < data.length;) at += await pwrite(fd, data.subarray(at), offset + at);
    });
  }

  /**
   * Deallocates `[offset, offset+length)`, size kept: the bytes read as zeros and the file
   * system blocks wholly inside are freed (partial ones at the edges are zeroed in place).
   * Resolves false, changing nothing, where the file system or platform cannot
   * (`EOPNOTSUPP`: ramfs, vfat; no FFI) so the caller writes zeros instead.
   */
  punchHole(offset: number, length: number): Promise<boolean> {
    return this.#fallocate(FALLOC_FL_PUNCH_HOLE, offset, length, "punch a hole in");
  }

  /**
   * Makes `[offset, offset+length)` read as zeros with its space allocated (later writes
   * there cannot fail for lack of space). Resolves false, changing nothing, where the file
   * system cannot (tmpfs, ramfs; no FFI).
   */
  zeroRange(offset: number, length: number): Promise<boolean> {
    return this.#fallocate(FALLOC_FL_ZERO_RANGE, offset, length, "zero a range of");
  }

  #fallocate(mode: number, offset: number, length: number, what: string): Promise<boolean> {
    return this.#run(what, (fd) => {
      const calls = libc();
      if (!calls) return Promise.resolve(false);
      if (length === 0) return Promise.resolve(true);
      if (calls.fallocate(fd, mode, offset, length) === 0) return Promise.resolve(true);
      const errno = calls.errno();
      if (errno === EOPNOTSUPP || errno === ENOSYS) return Promise.resolve(false);
      return Promise.reject(libcError(errno));
    });
  }

  /**
   * The allocation of `[offset, offset+length)` as consecutive extents from `offset`
   * (`lseek` `SEEK_DATA`/`SEEK_HOLE`), at most `maxExtents` of them (the last may end
   * before `offset+length`). Bytes past the end of the file are a hole. Where holes cannot
   * be found (no FFI) or the file system does not track them, all of it is data.
   */
  extents(offset: number, length: number, maxExtents = 1024): Promise<FileExtent[]> {
    return this.#run("map", (fd) => {
      const extents = fdExtents(fd, offset, length, maxExtents);
      return Array.isArray(extents)
        ? Promise.resolve(extents)
        : Promise.reject(libcError(extents.errno));
    });
  }

  /** File size in bytes. */
  size(): Promise<number> {
    return this.#run(
      "stat",
      (fd) =>
        new Promise((resolve, reject) =>
          fs.fstat(fd, (err, stats) => err ? reject(err) : resolve(stats.size))
        ),
    );
  }

  /** Sets the file size. */
  truncate(size: number): Promise<void> {
    return this.#run(
      "truncate",
      (fd) =>
        new Promise((resolve, reject) =>
          fs.ftruncate(fd, size, (err) => err ? reject(err) : resolve())
        ),
    );
  }

  /** fsync: every write that completed before this call is durable when it resolves. */
  sync(): Promise<void> {
    return this.#run(
      "sync",
      (fd) =>
        new Promise((resolve, reject) => fs.fsync(fd, (err) => err ? reject(err) : resolve())),
    );
  }

  /** Closes after the calls in flight finish; later calls fail with `IO`. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#inflight > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
    await io(
      `close ${this.path}`,
      () =>
        new Promise<void>((resolve, reject) =>
          fs.close(this.#fd, (err) => err ? reject(err) : resolve())
        ),
    );
  }
}

/** A failed libc call shaped like Node's errors, so `io` classifies a full disk. */
function libcError(errno: number): Error {
  return Object.assign(new Error(`failed (os error ${errno})`), {
    errno,
    code: errno === ENOSPC ? "ENOSPC" : undefined,
  });
}

/**
 * Reads and writes up to this size run synchronously: from the page cache a 4 KiB `pread64`
 * takes about 3 µs, while the hop to the thread pool and back costs about 30 µs (Deno 2.9.6,
 * measured). Larger ones go to the thread pool so the event loop is not held for long.
 */
const SYNC_IO_MAX_BYTES = 64 * 1024;

function pread(fd: number, into: Uint8Array, position: number): Promise<number> {
  if (into.length <= SYNC_IO_MAX_BYTES) {
    return Promise.resolve(fs.readSync(fd, into, 0, into.length, position));
  }
  return new Promise((resolve, reject) =>
    fs.read(
      fd,
      into,
      0,
      into.length,
      position,
      ((err, n) => err ? reject(err) : resolve(n)) as Done,
    )
  );
}

function pwrite(fd: number, data: Uint8Array, position: number): Promise<number> {
  if (data.length <= SYNC_IO_MAX_BYTES) {
    return Promise.resolve(fs.writeSync(fd, data, 0, data.length, position));
  }
  return new Promise((resolve, reject) =>
    fs.write(
      fd,
      data,
      0,
      data.length,
      position,
      ((err, n) => err ? reject(err) : resolve(n)) as Done,
    )
  );
}
