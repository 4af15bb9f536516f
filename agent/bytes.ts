/**
 * Byte-array helpers shared by the store, the wire and the tests.
 *
 * @module
 */

/**
 * Compares two byte arrays in time that depends only on their lengths, never on where they
 * differ, so a peer cannot learn a proof or tag byte by byte from response times.
 *
 * @example
 * ```ts
 * import { constantTimeEqual } from "./bytes.ts";
 * console.assert(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2])));
 * ```
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * The arrays of `parts` as one array, in order: a view over their common buffer, without a
 * copy, when each part follows the one before it in that buffer (blocks cut from one read),
 * otherwise a new array they are copied into (see {@linkcode concatBytes}).
 *
 * @example
 * ```ts
 * import { joinBytes } from "./bytes.ts";
 * const read = new Uint8Array(8);
 * console.assert(joinBytes([read.subarray(0, 4), read.subarray(4)]).buffer === read.buffer);
 * ```
 */
export function joinBytes(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 0) return new Uint8Array(0);
  const first = parts[0];
  let end = first.byteOffset + first.byteLength;
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i];
    if (part.buffer !== first.buffer || part.byteOffset !== end) return concatBytes(parts);
    end += part.byteLength;
  }
  return new Uint8Array(first.buffer, first.byteOffset, end - first.byteOffset);
}

/** The arrays of `parts` joined, in order, into one new array. */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
