/**
 * `Deno.dlopen` bindings to `librados.so.2` and `librbd.so.1` (Ceph 16.2, Debian's `librados2`
 * and `librbd1`), and the few pointer helpers the typed face in this folder needs. Private to
 * the folder: nothing outside it sees a pointer.
 *
 * Calls that may wait on the cluster (connect, open, close, snapshots, metadata, diff) are
 * `nonblocking`: they run on a thread of Deno's blocking pool and return a promise, so the event
 * loop keeps running. Calls that only touch client memory (submitting an aio request, reading a
 * completion's result) are synchronous.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";

const RADOS_SYMBOLS = {
  rados_create2: { parameters: ["buffer", "buffer", "buffer", "u64"], result: "i32" },
  rados_conf_read_file: { parameters: ["pointer", "buffer"], result: "i32" },
  rados_conf_set: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  rados_conf_get: { parameters: ["pointer", "buffer", "buffer", "usize"], result: "i32" },
  rados_connect: { parameters: ["pointer"], result: "i32", nonblocking: true },
  rados_shutdown: { parameters: ["pointer"], result: "void", nonblocking: true },
  rados_ioctx_create: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  rados_ioctx_destroy: { parameters: ["pointer"], result: "void" },
  rados_set_pool_full_try: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

const RBD_SYMBOLS = {
  rbd_create: {
    parameters: ["pointer", "buffer", "u64", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_create2: {
    parameters: ["pointer", "buffer", "u64", "u64", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_remove: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_list2: { parameters: ["pointer", "buffer", "buffer"], result: "i32", nonblocking: true },
  rbd_image_spec_list_cleanup: { parameters: ["buffer", "usize"], result: "void" },
  rbd_open: {
    parameters: ["pointer", "buffer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_open_read_only: {
    parameters: ["pointer", "buffer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_close: { parameters: ["pointer"], result: "i32", nonblocking: true },
  rbd_resize: { parameters: ["pointer", "u64"], result: "i32", nonblocking: true },
  rbd_stat: { parameters: ["pointer", "buffer", "usize"], result: "i32", nonblocking: true },
  rbd_get_size: { parameters: ["pointer", "buffer"], result: "i32" },
  rbd_get_features: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_flush: { parameters: ["pointer"], result: "i32", nonblocking: true },
  rbd_aio_create_completion: { parameters: ["pointer", "function", "buffer"], result: "i32" },
  rbd_set_image_notification: { parameters: ["pointer", "i32", "i32"], result: "i32" },
  rbd_poll_io_events: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  rbd_aio_get_return_value: { parameters: ["pointer"], result: "isize" },
  rbd_aio_release: { parameters: ["pointer"], result: "void" },
  rbd_aio_write: { parameters: ["pointer", "u64", "usize", "buffer", "pointer"], result: "i32" },
  rbd_aio_read: { parameters: ["pointer", "u64", "usize", "buffer", "pointer"], result: "i32" },
  rbd_aio_discard: { parameters: ["pointer", "u64", "u64", "pointer"], result: "i32" },
  rbd_aio_write_zeroes: {
    parameters: ["pointer", "u64", "usize", "pointer", "i32", "i32"],
    result: "i32",
  },
  rbd_aio_flush: { parameters: ["pointer", "pointer"], result: "i32" },
  rbd_snap_create: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_snap_remove: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_snap_rollback: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_snap_protect: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_snap_unprotect: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_snap_is_protected: {
    parameters: ["pointer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_snap_list: { parameters: ["pointer", "buffer", "buffer"], result: "i32", nonblocking: true },
  rbd_snap_list_end: { parameters: ["buffer"], result: "void" },
  rbd_snap_get_timestamp: {
    parameters: ["pointer", "u64", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_snap_set: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_metadata_get: {
    parameters: ["pointer", "buffer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_metadata_set: {
    parameters: ["pointer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_metadata_remove: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  rbd_metadata_list: {
    parameters: ["pointer", "buffer", "u64", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_diff_iterate2: {
    parameters: ["pointer", "buffer", "u64", "u64", "u8", "u8", "function", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  rbd_lock_acquire: { parameters: ["pointer", "i32"], result: "i32", nonblocking: true },
  rbd_lock_release: { parameters: ["pointer"], result: "i32", nonblocking: true },
  rbd_is_exclusive_lock_owner: {
    parameters: ["pointer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

const LIBC_SYMBOLS = {
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  close: { parameters: ["i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The librados symbols. */
export type RadosLib = Deno.DynamicLibrary<typeof RADOS_SYMBOLS>["symbols"];
/** The librbd symbols. */
export type RbdLib = Deno.DynamicLibrary<typeof RBD_SYMBOLS>["symbols"];
/** The few libc symbols the completion queue needs (an eventfd and a blocking read of it). */
export type LibcLib = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

let libraries: { rados: RadosLib; rbd: RbdLib; libc: LibcLib } | undefined;

/**
 * Opens both libraries once per process (they stay loaded: librados keeps threads of its own).
 *
 * @throws {PresyncError} `IO` when a library is not installed
 */
export function ceph(): { rados: RadosLib; rbd: RbdLib; libc: LibcLib } {
  if (libraries) return libraries;
  const open = <S extends Deno.ForeignLibraryInterface>(file: string, symbols: S) => {
    try {
      return Deno.dlopen(file, symbols).symbols;
    } catch (err) {
      throw new PresyncError(
        ErrorCode.IO,
        `cannot load ${file} (${err instanceof Error ? err.message : err}); install Ceph's ` +
          `client libraries: apt-get install librbd1 (or run scripts/setup.sh as root)`,
        { cause: err },
      );
    }
  };
  libraries = {
    rados: open("librados.so.2", RADOS_SYMBOLS),
    rbd: open("librbd.so.1", RBD_SYMBOLS),
    libc: open("libc.so.6", LIBC_SYMBOLS),
  };
  return libraries;
}

const encoder = new TextEncoder();

/** `text` as a NUL-terminated UTF-8 string for a `const char *` parameter. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** A one-pointer out-parameter (`T **`): pass `.bytes`, read `.pointer` after the call. */
export class PointerOut {
  readonly #cell = new BigUint64Array(1);
  /** The cell as a buffer argument. */
  readonly bytes = new Uint8Array(this.#cell.buffer);

  /** The pointer the call stored, or null. */
  get pointer(): Deno.PointerValue {
    return Deno.UnsafePointer.create(this.#cell[0]);
  }
}

/** Reads the NUL-terminated string at `pointer` (empty for null). */
export function readCString(pointer: Deno.PointerValue): string {
  return pointer === null ? "" : Deno.UnsafePointerView.getCString(pointer);
}

const retained = new Set<readonly ArrayBufferView[]>();

/**
 * Awaits `call` while keeping `buffers` (the buffers C reads or writes during it) reachable:
 * Deno hands a buffer's address to C but does not hold the buffer for a nonblocking call or an
 * aio request, so a buffer nothing else refers to could be collected while C still uses it.
 */
export async function held<T>(call: Promise<T>, ...buffers: ArrayBufferView[]): Promise<T> {
  retained.add(buffers);
  try {
    return await call;
  } finally {
    retained.delete(buffers);
  }
}

/** The numeric address of a pointer, as a map key. */
export function address(pointer: Deno.PointerValue): bigint {
  return BigInt(Deno.UnsafePointer.value(pointer));
}
