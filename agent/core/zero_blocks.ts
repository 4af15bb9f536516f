import { assertInteger } from "../errors.ts";
import { inCoreMemory } from "./_per_block.ts";
import { copyIn, core, mem, scratch, SCRATCH_OUT_BYTES, WINDOW_BYTES } from "./_wasm.ts";

/** True when every byte of `data` is zero. */
export function isZero(data: Uint8Array): boolean {
  if (inCoreMemory(data)) return core.isZero(data.byteOffset, data.length) !== 0;
  for (let offset = 0; offset < data.length; offset += WINDOW_BYTES) {
    const piece = data.subarray(offset, offset + WINDOW_BYTES);
    copyIn(piece, scratch.input);
    if (!core.isZero(scratch.input, piece.length)) return false;
  }
  return true;
}

/**
 * Which `blockSize`-byte blocks of `data` are all zero (the last block may be short): a
 * bitmap of `ceil(blocks / 8)` bytes where bit i (bit `i & 7` of byte `i >> 3`) is set
 * when block i is all zero. The same layout as {@linkcode Bitmap}. Data already in WASM
 * memory (a {@linkcode CoreBuffer}) is read in place.
 *
 * @example
 * ```ts
 * import { zeroBlocks } from "./mod.ts";
 * const data = new Uint8Array(3 * 512);
 * data[600] = 1; // block 1 is not zero
 * console.assert(zeroBlocks(data, 512)[0] === 0b101);
 * ```
 */
export function zeroBlocks(data: Uint8Array, blockSize: number): Uint8Array {
  assertInteger("block size", blockSize, 1, 2 ** 32 - 1);
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(Math.ceil(blocks / 8));
  const inPlace = inCoreMemory(data);
  // Pieces hold a multiple of 8 blocks so each piece's bits start on a byte.
  const blocksPerPiece = inPlace
    ? SCRATCH_OUT_BYTES * 8
    : Math.min(Math.floor(WINDOW_BYTES / blockSize / 8) * 8, SCRATCH_OUT_BYTES * 8);
  if (blocksPerPiece === 0) {
    for (let i = 0; i < blocks; i++) {
      if (isZero(data.subarray(i * blockSize, (i + 1) * blockSize))) out[i >> 3] |= 1 << (i & 7);
    }
    return out;
  }
  for (let first = 0; first < blocks; first += blocksPerPiece) {
    const piece = data.subarray(first * blockSize, (first + blocksPerPiece) * blockSize);
    const bitBytes = Math.ceil(Math.ceil(piece.length / blockSize) / 8);
    let input = piece.byteOffset;
    if (!inPlace) {
      copyIn(piece, scratch.input);
      input = scratch.input;
    }
    mem().fill(0, scratch.out, scratch.out + bitBytes);
    core.zeroBlocks(input, piece.length, blockSize, scratch.out, 0);
    out.set(mem().subarray(scratch.out, scratch.out + bitBytes), first / 8);
  }
  return out;
}
