// The presync WebAssembly core: the exports the TypeScript face in agent/core/ calls.
// Memory is owned by the TypeScript side through alloc/free; every other export works on
// addresses it was given and allocates nothing.

export {
  blockEntries,
  hashBlocks,
  HASHER_SIZE,
  hasherFinalize,
  hasherInit,
  hasherUpdate,
} from "./blake3";
export {
  bitmapAnd,
  bitmapAndCount,
  bitmapAndNot,
  bitmapAndNotCount,
  bitmapExtents,
  bitmapFillRange,
  bitmapOr,
  bitmapPopcount,
  bitmapXorCount,
} from "./bitmap";
export { isZero, zeroBlocks } from "./zero";
export { diffHashes } from "./manifest";
export { PREFILTER_BYTES, prefilterBlocks, prefilterKeyBytes } from "./prefilter";

/** Allocates `size` bytes, 16-byte aligned. Returns 0 when memory cannot grow. */
export function alloc(size: usize): usize {
  return heap.alloc(size);
}

/** Frees a block returned by alloc. */
export function free(ptr: usize): void {
  heap.free(ptr);
}
