/**
 * The snapshots of an open RBD image: create (after a flush), list with size and creation
 * time, remove, roll the head back, protect and unprotect.
 *
 * @module
 */

import type { ImageHandle } from "./_image_handle.ts";
import { ceph, cString, held, readCString } from "./_librbd.ts";
import { checkName } from "./_names.ts";
import { check, Errno } from "./rbd_error.ts";

/** One snapshot of an image, as {@linkcode RbdSnapshots.list} reports it. */
export interface SnapshotInfo {
  /** Ceph's id of the snapshot (grows with every snapshot of the image). */
  id: number;
  /** The snapshot's name. */
  name: string;
  /** The image's size when the snapshot was taken. */
  sizeBytes: number;
  /** When the snapshot was taken (milliseconds since the epoch, cluster clock). */
  createdAtMs: number;
}

/** Bytes of one `rbd_snap_info_t` (u64 id, u64 size, const char *name) and of a `timespec`. */
const SNAP_INFO_BYTES = 24;
const TIMESPEC_BYTES = 16;

/** The snapshots of one image; from {@linkcode RbdImage.snapshots}. */
export class RbdSnapshots {
  readonly #handle: ImageHandle;
  readonly #flush: () => Promise<void>;

  /** Used by {@linkcode RbdImage}; `flush` flushes the image before a snapshot is taken. */
  constructor(handle: ImageHandle, flush: () => Promise<void>) {
    this.#handle = handle;
    this.#flush = flush;
  }

  async #call(
    verb: string,
    name: string,
    fn: (image: Deno.PointerObject, arg: Uint8Array) => Promise<number>,
  ): Promise<void> {
    const arg = cString(checkName("snapshot", name));
    await this.#handle.run(async (image) => {
      check(await held(fn(image, arg), arg), `${verb} snapshot ${name} of ${this.#handle.label}`);
    });
  }

  /**
   * Flushes the image, then takes snapshot `name` of it: the snapshot holds every write
   * acknowledged before this call.
   */
  async create(name: string): Promise<void> {
    await this.#flush();
    await this.#call("creating", name, (image, arg) => ceph().rbd.rbd_snap_create(image, arg));
  }

  /** Removes snapshot `name` (`IO` when it is protected). */
  async remove(name: string): Promise<void> {
    return await this.#call(
      "removing",
      name,
      (image, arg) => ceph().rbd.rbd_snap_remove(image, arg),
    );
  }

  /**
   * Makes the head equal to snapshot `name` again (all writes after it are lost). Other
   * clients must not write meanwhile; take the exclusive lock first when there may be some.
   */
  async rollback(name: string): Promise<void> {
    return await this.#call(
      "rolling back to",
      name,
      (image, arg) => ceph().rbd.rbd_snap_rollback(image, arg),
    );
  }

  /** Protects snapshot `name` from removal (needed before cloning it). */
  async protect(name: string): Promise<void> {
    return await this.#call(
      "protecting",
      name,
      (image, arg) => ceph().rbd.rbd_snap_protect(image, arg),
    );
  }

  /** Undoes {@linkcode protect}. */
  async unprotect(name: string): Promise<void> {
    return await this.#call(
      "unprotecting",
      name,
      (image, arg) => ceph().rbd.rbd_snap_unprotect(image, arg),
    );
  }

  /** Whether snapshot `name` is protected. */
  async isProtected(name: string): Promise<boolean> {
    const arg = cString(checkName("snapshot", name));
    return await this.#handle.run(async (image) => {
      const flag = new Int32Array(1);
      const bytes = new Uint8Array(flag.buffer);
      check(
        await held(ceph().rbd.rbd_snap_is_protected(image, arg, bytes), arg, bytes),
        `reading the protection of snapshot ${name} of ${this.#handle.label}`,
      );
      return flag[0] !== 0;
    });
  }

  /** Every snapshot of the image, oldest first. */
  async list(): Promise<SnapshotInfo[]> {
    const what = `listing the snapshots of ${this.#handle.label}`;
    return await this.#handle.run(async (image) => {
      const { rbd } = ceph();
      const max = new Int32Array([16]);
      const maxBytes = new Uint8Array(max.buffer);
      for (;;) {
        // max counts the entries of the array, one of them the terminating entry.
        const infos = new Uint8Array(max[0] * SNAP_INFO_BYTES);
        const count = await held(rbd.rbd_snap_list(image, infos, maxBytes), infos, maxBytes);
        if (count === -Errno.ERANGE) continue;
        check(count, what);
        const view = new DataView(infos.buffer);
        const snapshots: SnapshotInfo[] = [];
        try {
          for (let i = 0; i < count; i++) {
            const at = i * SNAP_INFO_BYTES;
            snapshots.push({
              id: Number(view.getBigUint64(at, true)),
              sizeBytes: Number(view.getBigUint64(at + 8, true)),
              name: readCString(Deno.UnsafePointer.create(view.getBigUint64(at + 16, true))),
              createdAtMs: 0,
            });
          }
        } finally {
          rbd.rbd_snap_list_end(infos);
        }
        const time = new BigInt64Array(2);
        const timeBytes = new Uint8Array(time.buffer, 0, TIMESPEC_BYTES);
        for (const snapshot of snapshots) {
          check(
            await held(
              rbd.rbd_snap_get_timestamp(image, BigInt(snapshot.id), timeBytes),
              timeBytes,
            ),
            `${what} (time of ${snapshot.name})`,
          );
          snapshot.createdAtMs = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1e6);
        }
        return snapshots.sort((a, b) => a.id - b.id);
      }
    });
  }
}
