/** Bytes of one manifest entry. */
export const ENTRY_BYTES = 32;

/**
 * The manifest entry of an all-zero block: 32 zero bytes instead of the block's BLAKE3
 * (a BLAKE3 output of all zeros does not occur in practice). Manifests of sparse volumes
 * are therefore sparse files, and zero blocks are never hashed.
 */
export const ZERO_ENTRY = new Uint8Array(ENTRY_BYTES);

/**
 * Manifest entries for consecutive blocks of `data` (the last may be short): BLAKE3 of each
 * block, or {@linkcode ZERO_ENTRY} for all-zero blocks, which are not hashed.
 */
export { blockEntries } from "../core/mod.ts";

/** Whether a manifest entry marks an all-zero block. */
export function isZeroEntry(entry: Uint8Array): boolean {
  for (let i = 0; i < ENTRY_BYTES; i++) if (entry[i] !== 0) return false;
  return true;
}
