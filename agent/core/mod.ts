/**
 * The hot paths of presync, running in WebAssembly compiled from `assembly/`.
 *
 * Glossary:
 * - **block**: a fixed-size piece of a volume (default 64 KiB); the unit of tracking,
 *   hashing and transfer. The last block of a volume may be short.
 * - **block hash**: BLAKE3 of one block's bytes, 32 bytes.
 * - **manifest**: the block hashes of a whole volume, back to back (block i at byte 32·i).
 * - **bitmap**: a set of block numbers, one bit per block ({@linkcode Bitmap}).
 * - **extent**: a run of consecutive set bits, `[start, length]`.
 * - **zero block**: a block whose bytes are all zero; it travels as a marker, not data.
 * - **pre-filter value**: a keyed 128-bit NH hash of one block ({@linkcode prefilterBlocks}),
 *   several times cheaper than BLAKE3; equal values under a secret key mean equal blocks
 *   with probability at least 1 - 2^-64, so only blocks whose value changed need BLAKE3.
 *
 * Every function here is synchronous and batch-oriented: one call handles many blocks.
 * Inputs may be any `Uint8Array`, subarrays included; inputs larger than the core's
 * window are streamed through in pieces, and views of WASM memory ({@linkcode CoreBuffer})
 * are read in place. The core's memory is owned here: bitmaps, hashers, buffers and keys
 * release theirs with `free()` or `using`.
 *
 * @module
 */

export { blake3, BLAKE3_KEY_BYTES, Blake3Hasher, blake3Keyed } from "./blake3.ts";
export { blockEntries, HASH_BYTES, hashBlocks } from "./hash_blocks.ts";
export { isZero, zeroBlocks } from "./zero_blocks.ts";
export { Bitmap, type Extent, MAX_BITMAP_BITS } from "./bitmap.ts";
export { diffManifests } from "./diff_manifests.ts";
export { CoreBuffer } from "./core_buffer.ts";
export {
  PREFILTER_BYTES,
  PREFILTER_KEY_ID_BYTES,
  PREFILTER_SECRET_BYTES,
  prefilterBlocks,
  PrefilterKey,
} from "./prefilter.ts";
