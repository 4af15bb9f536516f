import { blake3 } from "./blake3.ts";
import { isZero } from "./zero_blocks.ts";
import { perBlock } from "./_per_block.ts";
import { core } from "./_wasm.ts";

/** Bytes of one block hash in a manifest. */
export const HASH_BYTES = 32;

/**
 * BLAKE3 hash of every `blockSize`-byte block of `data` (the last block may be short):
 * `ceil(data.length / blockSize)` hashes of 32 bytes, back to back. Each block is hashed
 * on its own, so block i's hash equals `blake3(block i)`.
 *
 * @example
 * ```ts
 * import { hashBlocks } from "./mod.ts";
 * const hashes = hashBlocks(new Uint8Array(10_000), 4096);
 * console.assert(hashes.length === 3 * 32);
 * ```
 */
export function hashBlocks(data: Uint8Array, blockSize: number): Uint8Array {
  return perBlock(
    data,
    blockSize,
    HASH_BYTES,
    blake3,
    (input, len, out) => core.hashBlocks(input, len, blockSize, 0, out),
  );
}

/**
 * Manifest entries of every `blockSize`-byte block of `data` (the last may be short): 32
 * zero bytes for an all-zero block, which is not hashed, else the block's BLAKE3. One
 * copy into WASM memory and one call per window (none for data already in WASM memory, such
 * as a {@linkcode CoreBuffer}), for the scan tracker's hot path.
 */
export function blockEntries(data: Uint8Array, blockSize: number): Uint8Array {
  return perBlock(
    data,
    blockSize,
    HASH_BYTES,
    (block) => isZero(block) ? new Uint8Array(HASH_BYTES) : blake3(block),
    (input, len, out) => core.blockEntries(input, len, blockSize, out),
  );
}
