/**
 * An open RBD image: positioned reads and writes (librbd aio, one promise each), flush,
 * discard and write-zeroes, size, exclusive lock, and its snapshots, metadata and diffs.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { ImageHandle } from "./_image_handle.ts";
import { ceph, cString, held } from "./_librbd.ts";
import { checkBytes, checkName } from "./_names.ts";
import { type DiffExtent, diffImage, type DiffOptions } from "./_diff.ts";
import { check, rbdError } from "./rbd_error.ts";
import { RbdMetadata } from "./rbd_metadata.ts";
import { RbdSnapshots } from "./rbd_snapshots.ts";

/** Feature bits of an image (`RBD_FEATURE_*` in librbd's `features.h`). */
export const ImageFeature = {
  LAYERING: 1,
  STRIPINGV2: 2,
  EXCLUSIVE_LOCK: 4,
  OBJECT_MAP: 8,
  FAST_DIFF: 16,
  DEEP_FLATTEN: 32,
  JOURNALING: 64,
  DATA_POOL: 128,
} as const;

/** What {@linkcode RbdImage.stat} reports. */
export interface ImageStat {
  /** The image's size. */
  sizeBytes: number;
  /** The size of one RADOS object of the image (2^orderBits). */
  objectSizeBytes: number;
  /** How many objects the image spans. */
  objectCount: number;
  /** log2 of the object size. */
  orderBits: number;
  /** {@linkcode ImageFeature} bits enabled on the image. */
  features: number;
}

/** Byte offsets of the fields of `rbd_image_info_t` (librbd.h) that stat reads. */
const IMAGE_INFO = { SIZE: 0, OBJ_SIZE: 8, NUM_OBJS: 16, ORDER: 24, BYTES: 160 } as const;
const RBD_LOCK_MODE_EXCLUSIVE = 0;

/**
 * An open image, from {@linkcode RbdPool.openImage}. Every method returns a promise and may be
 * called concurrently; {@linkcode close} (or `await using`) waits for calls in flight. Writes
 * are acknowledged once in librbd's cache (when it is on): {@linkcode flush} makes them durable.
 *
 * @example
 * ```ts ignore
 * await using image = await pool.openImage("presync-db1");
 * await image.write(4096, new Uint8Array(512).fill(1));
 * await image.flush();
 * const bytes = await image.read(4096, 512);
 * ```
 */
export class RbdImage implements AsyncDisposable {
  readonly #handle: ImageHandle;
  readonly #onClose: () => void;
  readonly #size = new BigUint64Array(1);
  readonly #sizeBytes = new Uint8Array(this.#size.buffer);
  /** The image's snapshots. */
  readonly snapshots: RbdSnapshots;
  /** The image's key/value metadata (`rbd image-meta`). */
  readonly metadata: RbdMetadata;

  /** Wraps an open `rbd_image_t`; use {@linkcode RbdPool.openImage}. */
  constructor(handle: ImageHandle, onClose: () => void = () => {}) {
    this.#handle = handle;
    this.#onClose = onClose;
    this.snapshots = new RbdSnapshots(handle, () => this.flush());
    this.metadata = new RbdMetadata(handle);
  }

  /** `pool/image` (with `@snapshot` when opened at one), for messages. */
  get name(): string {
    return this.#handle.label;
  }

  /** Whether {@linkcode close} has been called. */
  get closed(): boolean {
    return this.#handle.closed;
  }

  /**
   * Runs one aio call; `keep` stays reachable until librbd completes it. `describe` names the
   * call for an error message (built only on failure: this is the hot path).
   */
  async #aio(
    describe: () => string,
    submit: (image: Deno.PointerObject, completion: Deno.PointerValue) => number,
    keep?: Uint8Array,
  ): Promise<number> {
    const image = this.#handle.begin();
    try {
      const result = await this.#handle.completions.submit((c) => submit(image, c), keep);
      if (result < 0) throw rbdError(result, describe());
      return result;
    } finally {
      this.#handle.end();
    }
  }

  /** Throws `INVALID_ARGUMENT` unless `[offsetBytes, + lengthBytes)` lies inside the image. */
  #checkRange(describe: () => string, offsetBytes: number, lengthBytes: number): void {
    checkBytes("offsetBytes", offsetBytes);
    checkBytes("lengthBytes", lengthBytes);
    const image = this.#handle.begin();
    try {
      check(ceph().rbd.rbd_get_size(image, this.#sizeBytes), `size of ${this.name}`);
      const size = Number(this.#size[0]);
      if (offsetBytes + lengthBytes > size) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          `${describe()} goes past the end of the image (${size} bytes): resize it first`,
        );
      }
    } finally {
      this.#handle.end();
    }
  }

  /**
   * Writes `data` at `offsetBytes` (any alignment). `data` must not change until the promise
   * settles. A write past the end of the image fails with `INVALID_ARGUMENT` (librbd itself
   * would cut it short silently).
   */
  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    const describe = () => `write of ${data.length} bytes to ${this.name} at offset ${offsetBytes}`;
    this.#checkRange(describe, offsetBytes, data.length);
    await this.#aio(
      describe,
      (image, c) =>
        ceph().rbd.rbd_aio_write(image, BigInt(offsetBytes), BigInt(data.length), data, c),
      data,
    );
  }

  /** Reads into `target` from `offsetBytes`; returns the bytes read (short at the image's end). */
  async readInto(offsetBytes: number, target: Uint8Array): Promise<number> {
    checkBytes("offsetBytes", offsetBytes);
    return await this.#aio(
      () => `read of ${target.length} bytes from ${this.name} at offset ${offsetBytes}`,
      (image, c) =>
        ceph().rbd.rbd_aio_read(image, BigInt(offsetBytes), BigInt(target.length), target, c),
      target,
    );
  }

  /** Reads `lengthBytes` from `offsetBytes` (fewer at the image's end). */
  async read(offsetBytes: number, lengthBytes: number): Promise<Uint8Array> {
    const target = new Uint8Array(checkBytes("lengthBytes", lengthBytes));
    return target.subarray(0, await this.readInto(offsetBytes, target));
  }

  /** Writes zeros over `[offsetBytes, offsetBytes + lengthBytes)`; reads return zeros after. */
  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    const describe = () =>
      `write-zeroes of ${lengthBytes} bytes to ${this.name} at offset ${offsetBytes}`;
    this.#checkRange(describe, offsetBytes, lengthBytes);
    await this.#aio(
      describe,
      (image, c) =>
        ceph().rbd.rbd_aio_write_zeroes(image, BigInt(offsetBytes), BigInt(lengthBytes), c, 0, 0),
    );
  }

  /**
   * Tells RBD the range is unused so it can free whole objects. Parts of objects it may leave
   * as they are (`rbd_skip_partial_discard`): use {@linkcode writeZeroes} when the bytes must
   * read as zeros.
   */
  async discard(offsetBytes: number, lengthBytes: number): Promise<void> {
    checkBytes("offsetBytes", offsetBytes);
    checkBytes("lengthBytes", lengthBytes);
    await this.#aio(
      () => `discard of ${lengthBytes} bytes of ${this.name} at offset ${offsetBytes}`,
      (image, c) => ceph().rbd.rbd_aio_discard(image, BigInt(offsetBytes), BigInt(lengthBytes), c),
    );
  }

  /** Makes every write acknowledged so far durable in the cluster. */
  async flush(): Promise<void> {
    await this.#aio(
      () => `flush of ${this.name}`,
      (image, c) => ceph().rbd.rbd_aio_flush(image, c),
    );
  }

  /** Size, object size and features of the image. */
  async stat(): Promise<ImageStat> {
    return await this.#handle.run(async (image) => {
      const { rbd } = ceph();
      const info = new Uint8Array(IMAGE_INFO.BYTES);
      check(
        await held(rbd.rbd_stat(image, info, BigInt(info.length)), info),
        `stat of ${this.name}`,
      );
      const features = new BigUint64Array(1);
      const featureBytes = new Uint8Array(features.buffer);
      check(
        await held(rbd.rbd_get_features(image, featureBytes), featureBytes),
        `features of ${this.name}`,
      );
      const view = new DataView(info.buffer);
      return {
        sizeBytes: Number(view.getBigUint64(IMAGE_INFO.SIZE, true)),
        objectSizeBytes: Number(view.getBigUint64(IMAGE_INFO.OBJ_SIZE, true)),
        objectCount: Number(view.getBigUint64(IMAGE_INFO.NUM_OBJS, true)),
        orderBits: view.getInt32(IMAGE_INFO.ORDER, true),
        features: Number(features[0]),
      };
    });
  }

  /** Grows or shrinks the image to `sizeBytes` (shrinking drops the data past the new end). */
  async resize(sizeBytes: number): Promise<void> {
    checkBytes("sizeBytes", sizeBytes);
    return await this.#handle.run(async (image) => {
      check(
        await ceph().rbd.rbd_resize(image, BigInt(sizeBytes)),
        `resize of ${this.name} to ${sizeBytes} bytes`,
      );
    });
  }

  /**
   * Selects what reads see: the snapshot `name`, or the writable head for null. Writes fail
   * with `IO` (EROFS) while a snapshot is selected.
   */
  async setReadSnapshot(name: string | null): Promise<void> {
    return await this.#handle.run(async (image) => {
      const { rbd } = ceph();
      const arg = name === null ? null : cString(checkName("snapshot", name));
      const rc = arg
        ? await held(rbd.rbd_snap_set(image, arg), arg)
        : await rbd.rbd_snap_set(image, null);
      check(rc, `selecting snapshot ${name ?? "(head)"} of ${this.name}`);
    });
  }

  /**
   * The extents that changed since snapshot `fromSnapshot` (or that hold data at all, without
   * it), up to the snapshot selected by {@linkcode setReadSnapshot} or the head.
   */
  async diff(options: DiffOptions = {}): Promise<DiffExtent[]> {
    return await diffImage(this.#handle, options, () => this.stat());
  }

  /**
   * Takes the image's exclusive lock and keeps it (librbd then does not hand it to other
   * clients that ask), so no other client can write until {@linkcode releaseExclusiveLock}.
   * Needs the `exclusive-lock` feature (on by default).
   */
  async acquireExclusiveLock(): Promise<void> {
    return await this.#handle.run(async (image) => {
      check(
        await ceph().rbd.rbd_lock_acquire(image, RBD_LOCK_MODE_EXCLUSIVE),
        `exclusive lock of ${this.name}`,
      );
    });
  }

  /** Releases a lock taken with {@linkcode acquireExclusiveLock}. */
  async releaseExclusiveLock(): Promise<void> {
    return await this.#handle.run(async (image) => {
      check(
        await ceph().rbd.rbd_lock_release(image),
        `release of the exclusive lock of ${this.name}`,
      );
    });
  }

  /** Whether this client holds the image's exclusive lock now. */
  async isExclusiveLockOwner(): Promise<boolean> {
    return await this.#handle.run(async (image) => {
      const owner = new Int32Array(1);
      const bytes = new Uint8Array(owner.buffer);
      check(
        await held(ceph().rbd.rbd_is_exclusive_lock_owner(image, bytes), bytes),
        `lock owner of ${this.name}`,
      );
      return owner[0] !== 0;
    });
  }

  /** Waits for calls in flight, then closes the image (flushing librbd's cache). Idempotent. */
  async close(): Promise<void> {
    await this.#handle.close(async (image) => {
      this.#onClose();
      check(await ceph().rbd.rbd_close(image), `close of ${this.name}`);
    });
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
