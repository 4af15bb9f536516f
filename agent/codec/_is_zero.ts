/**
 * Zero-block detection for the block frame encoder. A plain TypeScript loop for now; the WASM
 * core's batch `zeroBlocks` can replace it through the `isZero` option of `encodeBlockFrame`.
 *
 * @module
 */

/** Words OR-ed together between early-exit checks; 8 × 4 bytes measured ~5 GB/s on V8. */
const UNROLL_WORDS = 8;

/**
 * Returns true when every byte of `bytes` is zero (true for an empty array).
 *
 * Reads four bytes at a time through a `Uint32Array` view over the aligned middle part and
 * byte by byte at the unaligned ends, stopping at the first non-zero word.
 */
export function isAllZero(bytes: Uint8Array): boolean {
  const length = bytes.length;
  let i = 0;
  const head = Math.min(length, (4 - (bytes.byteOffset & 3)) & 3);
  for (; i < head; i++) {
    if (bytes[i] !== 0) return false;
  }
  // `byteOffset + i` is 4-aligned unless the head loop used up the array: then no view.
  const wordCount = (length - i) >>> 2;
  const words = wordCount === 0
    ? new Uint32Array(0)
    : new Uint32Array(bytes.buffer, bytes.byteOffset + i, wordCount);
  let k = 0;
  for (; k + UNROLL_WORDS <= wordCount; k += UNROLL_WORDS) {
    if (
      (words[k] | words[k + 1] | words[k + 2] | words[k + 3] | words[k + 4] | words[k + 5] |
        words[k + 6] | words[k + 7]) !== 0
    ) {
      return false;
    }
  }
  for (; k < wordCount; k++) {
    if (words[k] !== 0) return false;
  }
  for (i += wordCount * 4; i < length; i++) {
    if (bytes[i] !== 0) return false;
  }
  return true;
}
