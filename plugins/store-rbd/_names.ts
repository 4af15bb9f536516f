/**
 * Checks on the names this folder passes to Ceph (pools, images, snapshots, metadata keys,
 * client ids) before they reach C: bounded, no NUL, and no separator Ceph gives a meaning to.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";

/** Longest name accepted, in UTF-8 bytes (RADOS object names of an image add a prefix). */
export const MAX_NAME_BYTES = 200;

const encoder = new TextEncoder();

/**
 * Throws `INVALID_ARGUMENT` unless `name` is 1 to {@linkcode MAX_NAME_BYTES} bytes with no
 * control character, `/` or `@` (Ceph's pool/image@snapshot separators).
 */
export function checkName(kind: string, name: string): string {
  const bytes = encoder.encode(name).length;
  // deno-lint-ignore no-control-regex
  if (bytes === 0 || bytes > MAX_NAME_BYTES || /[\u0000-\u001f\u007f/@]/.test(name)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${kind} name must be 1 to ${MAX_NAME_BYTES} bytes without control characters, "/" or ` +
        `"@": received ${JSON.stringify(name)}`,
    );
  }
  return name;
}

/** Throws `INVALID_ARGUMENT` unless `value` is an integer byte count/offset in `[0, 2^53)`. */
export function checkBytes(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${name} must be a non-negative integer number of bytes: received ${value}`,
    );
  }
  return value;
}
