/**
 * The key/value metadata of an RBD image (`rbd image-meta`), stored in the image's header
 * object: each set is one atomic update of one key.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { ImageHandle } from "./_image_handle.ts";
import { ceph, cString, held } from "./_librbd.ts";
import { checkName } from "./_names.ts";
import { check, Errno } from "./rbd_error.ts";

/** Longest metadata value accepted, in UTF-8 bytes. */
export const MAX_METADATA_VALUE_BYTES = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The metadata of one image; from {@linkcode RbdImage.metadata}. */
export class RbdMetadata {
  readonly #handle: ImageHandle;

  /** Used by {@linkcode RbdImage}. */
  constructor(handle: ImageHandle) {
    this.#handle = handle;
  }

  /** Sets `key` to `value` (one atomic update of the image header). */
  async set(key: string, value: string): Promise<void> {
    const keyArg = cString(checkName("metadata key", key));
    if (value.includes("\0") || encoder.encode(value).length > MAX_METADATA_VALUE_BYTES) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `metadata value of ${key} must have no NUL and at most ${MAX_METADATA_VALUE_BYTES} ` +
          `bytes: received ${encoder.encode(value).length} bytes`,
      );
    }
    const valueArg = cString(value);
    return await this.#handle.run(async (image) => {
      check(
        await held(ceph().rbd.rbd_metadata_set(image, keyArg, valueArg), keyArg, valueArg),
        `setting metadata ${key} of ${this.#handle.label}`,
      );
    });
  }

  /** The value of `key`, or undefined when the image has no such key. */
  async get(key: string): Promise<string | undefined> {
    const keyArg = cString(checkName("metadata key", key));
    return await this.#handle.run(async (image) => {
      const { rbd } = ceph();
      const length = new BigUint64Array([256n]);
      const lengthBytes = new Uint8Array(length.buffer);
      for (;;) {
        const value = new Uint8Array(Number(length[0]));
        const rc = await held(
          rbd.rbd_metadata_get(image, keyArg, value, lengthBytes),
          keyArg,
          value,
          lengthBytes,
        );
        if (rc === -Errno.ENOENT) return undefined;
        if (rc === -Errno.ERANGE) continue;
        check(rc, `reading metadata ${key} of ${this.#handle.label}`);
        const end = value.indexOf(0);
        return decoder.decode(end < 0 ? value : value.subarray(0, end));
      }
    });
  }

  /** Removes `key`; does nothing when the image has no such key. */
  async remove(key: string): Promise<void> {
    const keyArg = cString(checkName("metadata key", key));
    return await this.#handle.run(async (image) => {
      const rc = await held(ceph().rbd.rbd_metadata_remove(image, keyArg), keyArg);
      if (rc !== -Errno.ENOENT) check(rc, `removing metadata ${key} of ${this.#handle.label}`);
    });
  }

  /** Every key of the image with its value. */
  async list(): Promise<Map<string, string>> {
    const what = `listing the metadata of ${this.#handle.label}`;
    return await this.#handle.run(async (image) => {
      const { rbd } = ceph();
      const lengths = new BigUint64Array([4096n, 4096n]);
      const keysLength = new Uint8Array(lengths.buffer, 0, 8);
      const valuesLength = new Uint8Array(lengths.buffer, 8, 8);
      const start = cString("");
      for (;;) {
        const keys = new Uint8Array(Number(lengths[0]));
        const values = new Uint8Array(Number(lengths[1]));
        const rc = await held(
          rbd.rbd_metadata_list(image, start, 0n, keys, keysLength, values, valuesLength),
          start,
          keys,
          keysLength,
          values,
          valuesLength,
        );
        if (rc === -Errno.ERANGE) continue;
        check(rc, what);
        const split = (bytes: Uint8Array, length: bigint) =>
          decoder.decode(bytes.subarray(0, Number(length))).split("\0").slice(0, -1);
        const keyList = split(keys, lengths[0]);
        const valueList = split(values, lengths[1]);
        return new Map(keyList.map((k, i) => [k, valueList[i]]));
      }
    });
  }
}
