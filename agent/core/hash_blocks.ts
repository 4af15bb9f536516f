import { assertInteger } from "../errors.ts";
import { blake3 } from "./blake3.ts";
import { isZero } from "./zero_blocks.ts";
import { copyIn, core, MAX_BATCH_BLOCKS, mem, scratch, WINDOW_BYTES } from "./_wasm.ts";

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
    blake3,
    (input, len, out) => core.hashBlocks(input, len, blockSize, 0, out),
  );
}

/**
 * Manifest entries of every `blockSize`-byte block of `data` (the last may be short): 32
 * zero bytes for an all-zero block, which is not hashed, else the block's BLAKE3. One
 * copy into WASM memory and one call per window, for the scan tracker's hot path.
 */
export function blockEntries(data: Uint8Array, blockSize: number): Uint8Array {
  return perBlock(
    data,
    blockSize,
    (block) => isZero(block) ? new Uint8Array(HASH_BYTES) : blake3(block),
    (input, len, out) => core.blockEntries(input, len, blockSize, out),
  );
}

/**
 * Runs a batch WASM function over windows of whole blocks, collecting 32 bytes per block;
 * blocks larger than the window go one by one through `single`.
 */
function perBlock(
  data: Uint8Array,
  blockSize: number,
  single: (block: Uint8Array) => Uint8Array,
  batch: (input: number, len: number, out: number) => void,
): Uint8Array {
  assertInteger("block size", blockSize, 1, 2 ** 32 - 1);
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(blocks * HASH_BYTES);
  if (blockSize > WINDOW_BYTES) {
    for (let i = 0; i < blocks; i++) {
      out.set(single(data.subarray(i * blockSize, (i + 1) * blockSize)), i * HASH_BYTES);
    }
    return out;
  }
  const blocksPerPiece = Math.min(Math.floor(WINDOW_BYTES / blockSize), MAX_BATCH_BLOCKS);
  for (let first = 0; first < blocks; first += blocksPerPiece) {
    const piece = data.subarray(first * blockSize, (first + blocksPerPiece) * blockSize);
    copyIn(piece, scratch.input);
    batch(scratch.input, piece.length, scratch.out);
    const count = Math.ceil(piece.length / blockSize);
    out.set(mem().subarray(scratch.out, scratch.out + count * HASH_BYTES), first * HASH_BYTES);
  }
  return out;
}
