/**
 * The Linux calls Deno has no API for, reached through `Deno.dlopen` on glibc:
 * `fallocate(2)` (claim disk space, punch holes, zero ranges), `flock(2)` with `LOCK_NB` (a
 * lock that does not wait) and `lseek(2)` with `SEEK_DATA`/`SEEK_HOLE` (where a sparse file's
 * holes are; `Deno.FsFile.seek` accepts only Start, Current and End) and `setpriority(2)` on
 * one thread (Deno sets no thread's nice value), and `pwrite(2)` on another thread (`node:fs`
 * writes run on the event loop's thread in Deno 2.9.6). All work on the real file descriptors
 * `node:fs` hands out in Deno 2.9.6. The calls but `pwrite` run on the calling thread (not
 * `nonblocking`), so `errno()` read right after one is that call's.
 * Where the library cannot be loaded (not Linux, no `--allow-ffi`), {@linkcode libc} is null
 * and callers fall back (write zeros instead of claiming, no advisory locks).
 *
 * @module
 */

/** `fallocate` mode: deallocate the range, keep the file size (PUNCH_HOLE | KEEP_SIZE). */
export const FALLOC_FL_PUNCH_HOLE = 0x02 | 0x01;
/**
 * `fallocate` mode: make the range read as zeros, space stays allocated, size kept
 * (ZERO_RANGE | KEEP_SIZE). ext4 and xfs do it as a metadata change; tmpfs refuses it.
 */
export const FALLOC_FL_ZERO_RANGE = 0x10 | 0x01;
/** `setpriority` target kind: a process, which on Linux means one thread (its id). */
const PRIO_PROCESS = 0;
/** `lseek` whence values (linux/fs.h). */
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
/** `flock` operations. */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
/** errno values we branch on. */
export const ENXIO = 6;
export const EWOULDBLOCK = 11;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EOPNOTSUPP = 95;
export const ENOSYS = 38;

const SYMBOLS = {
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
  gettid: { parameters: [], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  // On Deno's blocking-call threads: the event loop goes on while the kernel copies the data
  // (and waits under writeback throttling). errno of such a call is that thread's, unread.
  pwrite64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
} as const;

/** The loaded calls; each returns 0 or -1 and `errno()` tells why. */
export interface Libc {
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  flock(fd: number, operation: number): number;
  /** The resulting offset, or -1 (`ENXIO`: no data/hole at or after `offset`). */
  lseek(fd: number, offset: number, whence: number): number;
  /** Sets the nice value of thread `tid` (Linux: `PRIO_PROCESS` names one thread). */
  setThreadNice(tid: number, nice: number): number;
  /** The calling thread's id. */
  gettid(): number;
  /** errno of the last failed call on this thread (read right after the call). */
  errno(): number;
  /**
   * `pwrite(2)` on another thread: the bytes written (may be fewer than `data.length`), or -1
   * with no errno to read (the caller repeats the write on its own thread to learn why).
   * `data` must not change until the promise settles.
   */
  pwriteElsewhere(fd: number, data: Uint8Array, offset: number): Promise<number>;
}

let loaded: Libc | null | undefined;

/** The calls, loaded on first use; null where they cannot be. */
export function libc(): Libc | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (Deno.build.os !== "linux") return loaded;
  try {
    const lib = Deno.dlopen("libc.so.6", SYMBOLS);
    const { fallocate, flock, lseek, setpriority, gettid, __errno_location, pwrite64 } =
      lib.symbols;
    loaded = {
      fallocate: (fd, mode, offset, length) => fallocate(fd, mode, BigInt(offset), BigInt(length)),
      flock: (fd, operation) => flock(fd, operation),
      lseek: (fd, offset, whence) => Number(lseek(fd, BigInt(offset), whence)),
      setThreadNice: (tid, nice) => setpriority(PRIO_PROCESS, tid, nice),
      gettid: () => gettid(),
      errno: () => new Deno.UnsafePointerView(__errno_location()!).getInt32(),
      pwriteElsewhere: async (fd, data, offset) =>
        Number(await pwrite64(fd, data, BigInt(data.length), BigInt(offset))),
    };
  } catch {
    // No FFI permission or no glibc: the callers' fallbacks apply.
  }
  return loaded;
}

/** One piece of a file's allocation map: `data` false means a hole (reads as zeros). */
export interface FileExtent {
  offset: number;
  length: number;
  data: boolean;
}

/**
 * The allocation of `[offset, offset+length)` of descriptor `fd` as consecutive extents from
 * `offset` (`lseek` `SEEK_DATA`/`SEEK_HOLE`), at most `maxExtents` of them (the last may end
 * before `offset+length`). Bytes past the end of the file are a hole. Where holes cannot be
 * found (no FFI) or the file system does not track them (`EINVAL`), all of it is data. Any
 * other failure is returned as its errno.
 */
export function fdExtents(
  fd: number,
  offset: number,
  length: number,
  maxExtents: number,
): FileExtent[] | { errno: number } {
  const end = offset + length;
  const calls = libc();
  if (!calls) return [{ offset, length, data: true }];
  const out: FileExtent[] = [];
  let at = offset;
  while (at < end && out.length < maxExtents) {
    let data = calls.lseek(fd, at, SEEK_DATA);
    if (data < 0) {
      const errno = calls.errno();
      if (errno === EINVAL) return [{ offset, length, data: true }];
      if (errno !== ENXIO) return { errno };
      data = end; // nothing but hole up to the end of the file
    }
    if (data > at) {
      const stop = Math.min(data, end);
      out.push({ offset: at, length: stop - at, data: false });
      at = stop;
      continue;
    }
    const hole = calls.lseek(fd, at, SEEK_HOLE);
    if (hole < 0) return { errno: calls.errno() };
    const stop = Math.min(hole, end);
    out.push({ offset: at, length: stop - at, data: true });
    at = stop;
  }
  return out;
}
