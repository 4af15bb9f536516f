/**
 * One RADOS pool (an I/O context) seen as a set of RBD images: create, list, open, remove.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { ImageHandle } from "./_image_handle.ts";
import { ceph, cString, held, PointerOut, readCString } from "./_librbd.ts";
import { checkBytes, checkName } from "./_names.ts";
import { check, Errno } from "./rbd_error.ts";
import { RbdImage } from "./rbd_image.ts";

/** Options of {@linkcode RbdPool.createImage}. */
export interface CreateImageOptions {
  /**
   * log2 of the RADOS object size, 12 to 26 (4 KiB to 64 MiB). Default: the cluster's
   * `rbd_default_order` (22, 4 MiB objects).
   */
  orderBits?: number;
  /**
   * {@linkcode ImageFeature} bits to enable instead of the cluster's `rbd_default_features`
   * (layering, exclusive-lock, object-map, fast-diff, deep-flatten).
   */
  features?: number;
}

/** Options of {@linkcode RbdPool.openImage}. */
export interface OpenImageOptions {
  /** Open at this snapshot (reads only). */
  snapshot?: string;
  /** Open without taking part in the exclusive lock or writing the header. Default false. */
  readOnly?: boolean;
}

/** Bytes of one `rbd_image_spec_t` (char *id, char *name). */
const IMAGE_SPEC_BYTES = 16;

/**
 * A pool of RBD images, from {@linkcode RadosCluster.openPool}. Closing it closes the images
 * opened through it.
 */
export class RbdPool implements AsyncDisposable {
  /** The pool's name. */
  readonly name: string;
  #ioctx: Deno.PointerObject | null;
  readonly #images = new Set<RbdImage>();
  readonly #onClose: () => void;

  /** Wraps an open `rados_ioctx_t`; use {@linkcode RadosCluster.openPool}. */
  constructor(ioctx: Deno.PointerObject, name: string, onClose: () => void) {
    this.#ioctx = ioctx;
    this.name = name;
    this.#onClose = onClose;
  }

  #io(): Deno.PointerObject {
    if (this.#ioctx === null) {
      throw new PresyncError(ErrorCode.IO, `pool ${this.name} is closed: open it again first`);
    }
    return this.#ioctx;
  }

  /** Creates image `name` of `sizeBytes` (thin: nothing is allocated until written). */
  async createImage(
    name: string,
    sizeBytes: number,
    options: CreateImageOptions = {},
  ): Promise<void> {
    const arg = cString(checkName("image", name));
    checkBytes("sizeBytes", sizeBytes);
    const order = new Int32Array([options.orderBits ?? 0]);
    const orderBytes = new Uint8Array(order.buffer);
    const { rbd } = ceph();
    const io = this.#io();
    const call = options.features === undefined
      ? rbd.rbd_create(io, arg, BigInt(sizeBytes), orderBytes)
      : rbd.rbd_create2(io, arg, BigInt(sizeBytes), BigInt(options.features), orderBytes);
    check(
      await held(call, arg, orderBytes),
      `creating image ${this.name}/${name} of ${sizeBytes} bytes`,
    );
  }

  /** Removes image `name` (`IO` while it has snapshots or is open in another client). */
  async removeImage(name: string): Promise<void> {
    const arg = cString(checkName("image", name));
    check(
      await held(ceph().rbd.rbd_remove(this.#io(), arg), arg),
      `removing image ${this.name}/${name}`,
    );
  }

  /** The names of the pool's images, sorted. */
  async listImages(): Promise<string[]> {
    const { rbd } = ceph();
    const max = new BigUint64Array([64n]);
    const maxBytes = new Uint8Array(max.buffer);
    for (;;) {
      const specs = new Uint8Array(Number(max[0]) * IMAGE_SPEC_BYTES);
      const rc = await held(rbd.rbd_list2(this.#io(), specs, maxBytes), specs, maxBytes);
      if (rc === -Errno.ERANGE) continue;
      check(rc, `listing the images of pool ${this.name}`);
      const count = Number(max[0]);
      const view = new DataView(specs.buffer);
      const names: string[] = [];
      for (let i = 0; i < count; i++) {
        names.push(
          readCString(Deno.UnsafePointer.create(view.getBigUint64(i * IMAGE_SPEC_BYTES + 8, true))),
        );
      }
      rbd.rbd_image_spec_list_cleanup(specs, BigInt(count));
      return names.sort();
    }
  }

  /** Opens image `name` (at a snapshot, or read-only, when asked). */
  async openImage(name: string, options: OpenImageOptions = {}): Promise<RbdImage> {
    const { rbd } = ceph();
    const arg = cString(checkName("image", name));
    const snap = options.snapshot === undefined
      ? null
      : cString(checkName("snapshot", options.snapshot));
    const label = `${this.name}/${name}${
      options.snapshot === undefined ? "" : `@${options.snapshot}`
    }`;
    const out = new PointerOut();
    const open = options.readOnly ? rbd.rbd_open_read_only : rbd.rbd_open;
    const call = open(this.#io(), arg, out.bytes, snap);
    check(
      await (snap ? held(call, arg, out.bytes, snap) : held(call, arg, out.bytes)),
      `opening image ${label}`,
    );
    let handle: ImageHandle;
    try {
      handle = new ImageHandle(out.pointer!, label);
    } catch (err) {
      await rbd.rbd_close(out.pointer);
      throw err;
    }
    const image = new RbdImage(handle, () => this.#images.delete(image));
    this.#images.add(image);
    return image;
  }

  /** Closes the images still open through this pool, then the pool. Idempotent. */
  async close(): Promise<void> {
    const ioctx = this.#ioctx;
    if (ioctx === null) return;
    const errors: unknown[] = [];
    for (const image of this.#images) await image.close().catch((err) => errors.push(err));
    this.#images.clear();
    this.#ioctx = null;
    ceph().rados.rados_ioctx_destroy(ioctx);
    this.#onClose();
    if (errors.length > 0) throw errors[0];
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
