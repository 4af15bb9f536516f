import * as nodeFs from "node:fs";
import type { FileHandle, FileLock, FileSystem, OpenOptions } from "./file_system.ts";
import {
  ENOSPC,
  ENOSYS,
  EOPNOTSUPP,
  EWOULDBLOCK,
  FALLOC_FL_PUNCH_HOLE,
  fdExtents,
  type FileExtent,
  libc,
  LOCK_EX,
  LOCK_NB,
  LOCK_SH,
} from "./_libc.ts";

/**
 * Reads and writes up to this size run synchronously: from the page cache a 64 KiB `pread64`
 * takes microseconds, less than the hop to the thread pool and back (about 30 µs in Deno
 * 2.9.6). Larger ones go to the thread pool so the event loop is not held for long (writes
 * through libc: see {@linkcode pwrite}).
 */
const SYNC_IO_MAX_BYTES = 64 * 1024;

/** The error a failed libc call stands for, shaped like Node's (`code`, os error text). */
function errnoError(what: string, path: string, errno: number): Error {
  if (errno === ENOSPC) {
    return Object.assign(new Error(`No space left on device (os error 28): ${what} ${path}`), {
      code: "ENOSPC",
    });
  }
  return Object.assign(new Error(`${what} ${path} failed (os error ${errno})`), { errno });
}

/**
 * A file handle over a real file descriptor (`node:fs`, whose positioned `read`/`write` are
 * `pread64`/`pwrite64` in Deno 2.9.6): positioned calls may run concurrently, and the
 * descriptor reaches `fallocate` through FFI. `close()` waits for the calls in flight.
 */
class DenoFileHandle implements FileHandle {
  readonly #path: string;
  readonly #fd: number;
  #inflight = 0;
  #closeRequested = false;
  #closed = false;

  constructor(path: string, fd: number) {
    this.#path = path;
    this.#fd = fd;
  }

  async #run<T>(fn: (fd: number) => T | Promise<T>): Promise<T> {
    if (this.#closeRequested) throw new Error(`${this.#path}: the file is closed`);
    this.#inflight++;
    try {
      return await fn(this.#fd);
    } finally {
      if (--this.#inflight === 0 && this.#closeRequested) this.#closeNow();
    }
  }

  read(offset: number, into: Uint8Array): Promise<number> {
    return this.#run(async (fd) => {
      let total = 0;
      while (total < into.length) {
        const n = await pread(fd, into.subarray(total), offset + total);
        if (n === 0) break;
        total += n;
      }
      return total;
    });
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#run(async (fd) => {
      for (let at = 0; at < data.length;) at += await pwrite(fd, data.subarray(at), offset + at);
    });
  }

  size(): Promise<number> {
    return this.#run((fd) =>
      new Promise((resolve, reject) =>
        nodeFs.fstat(fd, (err, stats) => err ? reject(err) : resolve(stats.size))
      )
    );
  }

  truncate(size: number): Promise<void> {
    return this.#run((fd) =>
      new Promise((resolve, reject) =>
        nodeFs.ftruncate(fd, size, (err) => err ? reject(err) : resolve())
      )
    );
  }

  sync(): Promise<void> {
    return this.#run((fd) =>
      new Promise((resolve, reject) => nodeFs.fsync(fd, (err) => err ? reject(err) : resolve()))
    );
  }

  allocate(offset: number, length: number): Promise<boolean> {
    return this.#fallocate(0, offset, length, "fallocate");
  }

  punchHole(offset: number, length: number): Promise<boolean> {
    return this.#fallocate(FALLOC_FL_PUNCH_HOLE, offset, length, "punch a hole in");
  }

  #fallocate(mode: number, offset: number, length: number, what: string): Promise<boolean> {
    return this.#run((fd) => {
      const calls = libc();
      if (!calls) return false;
      if (length === 0) return true;
      if (calls.fallocate(fd, mode, offset, length) === 0) return true;
      const errno = calls.errno();
      if (errno === EOPNOTSUPP || errno === ENOSYS) return false;
      throw errnoError(what, this.#path, errno);
    });
  }

  extents(offset: number, length: number, maxExtents = 1024): Promise<FileExtent[]> {
    return this.#run((fd) => {
      const extents = fdExtents(fd, offset, length, maxExtents);
      if (Array.isArray(extents)) return extents;
      throw errnoError("find the holes of", this.#path, extents.errno);
    });
  }

  close(): void {
    if (this.#closeRequested) return;
    this.#closeRequested = true;
    if (this.#inflight === 0) this.#closeNow();
  }

  #closeNow(): void {
    if (this.#closed) return;
    this.#closed = true;
    nodeFs.closeSync(this.#fd);
  }
}

function pread(fd: number, into: Uint8Array, position: number): Promise<number> {
  if (into.length <= SYNC_IO_MAX_BYTES) {
    return Promise.resolve(nodeFs.readSync(fd, into, 0, into.length, position));
  }
  return new Promise((resolve, reject) =>
    nodeFs.read(fd, into, 0, into.length, position, (err, n) => err ? reject(err) : resolve(n))
  );
}

/**
 * A positioned write; a large one on another thread: `node:fs`'s asynchronous `write` runs the
 * system call on the event loop's thread in Deno 2.9.6 (a seed profile had 13% of serve's time
 * there, under writeback throttling), so it goes through libc's `pwrite` on Deno's blocking-call
 * threads. A failed one is repeated here, which throws the error as `node:fs` shapes it (ENOSPC…).
 */
async function pwrite(fd: number, data: Uint8Array, position: number): Promise<number> {
  const calls = data.length > SYNC_IO_MAX_BYTES ? libc() : null;
  if (calls) {
    const n = await calls.pwriteElsewhere(fd, data, position);
    if (n >= 0) return n;
  }
  return nodeFs.writeSync(fd, data, 0, data.length, position);
}

/** `node:fs` reports a missing path as ENOENT; the FileSystem contract says NotFound. */
function openFd(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) =>
    nodeFs.open(path, flags, 0o666, (err, fd) => {
      if (!err) return resolve(fd);
      reject(err.code === "ENOENT" ? new Deno.errors.NotFound(`${err.message}`) : err);
    })
  );
}

/** The real file system, through Deno's file APIs and `node:fs` descriptors. */
export class DenoFileSystem implements FileSystem {
  async open(path: string, options: OpenOptions = {}): Promise<FileHandle> {
    const { O_RDONLY, O_RDWR, O_CREAT } = nodeFs.constants;
    const write = options.write === true || options.create === true;
    const flags = write ? O_RDWR | (options.create === true ? O_CREAT : 0) : O_RDONLY;
    return new DenoFileHandle(path, await openFd(path, flags));
  }

  rename(from: string, to: string): Promise<void> {
    return Deno.rename(from, to);
  }

  async remove(path: string): Promise<void> {
    try {
      await Deno.remove(path, { recursive: true });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }

  mkdir(path: string): Promise<void> {
    return Deno.mkdir(path, { recursive: true });
  }

  async syncDir(path: string): Promise<void> {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await Deno.stat(path);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    }
  }

  async readDir(path: string): Promise<string[]> {
    const names: string[] = [];
    for await (const entry of Deno.readDir(path)) names.push(entry.name);
    return names;
  }

  async allocatedBytes(path: string): Promise<number> {
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return 0;
      throw err;
    }
    let total = (info.blocks ?? Math.ceil(info.size / 512)) * 512;
    if (info.isDirectory) {
      for await (const entry of Deno.readDir(path)) {
        total += await this.allocatedBytes(`${path}/${entry.name}`);
      }
    }
    return total;
  }

  async tryLock(path: string, mode: "shared" | "exclusive"): Promise<FileLock | null> {
    const calls = libc();
    const fd = await openFd(path, nodeFs.constants.O_RDONLY);
    let held = true;
    const lock: FileLock = {
      release: () => {
        if (!held) return;
        held = false;
        nodeFs.closeSync(fd);
      },
      [Symbol.dispose]: () => lock.release(),
    };
    if (!calls) return lock;
    if (calls.flock(fd, (mode === "exclusive" ? LOCK_EX : LOCK_SH) | LOCK_NB) === 0) return lock;
    const errno = calls.errno();
    lock.release();
    if (errno === EWOULDBLOCK) return null;
    throw errnoError("lock", path, errno);
  }
}
