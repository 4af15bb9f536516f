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
