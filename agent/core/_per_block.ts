import { assertInteger } from "../errors.ts";
import { copyIn, core, MAX_BATCH_BLOCKS, mem, scratch, WINDOW_BYTES } from "./_wasm.ts";

/** True when `data` is a view of WASM memory itself, so the core can read it in place. */
export function inCoreMemory(data: Uint8Array): boolean {
  return data.buffer === core.memory.buffer;
}

/**
 * Runs a batch WASM function over whole blocks of `data`, collecting `entryBytes` per block
 * (at most 32). Data already in WASM memory is read in place, MAX_BATCH_BLOCKS blocks per
 * call; other data is copied in a window at a time, and blocks larger than the window go
 * one by one through `single`.
 */
export function perBlock(
  data: Uint8Array,
  blockSize: number,
  entryBytes: number,
  single: (block: Uint8Array) => Uint8Array,
  batch: (input: number, len: number, out: number) => void,
): Uint8Array {
  assertInteger("block size", blockSize, 1, 2 ** 32 - 1);
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(blocks * entryBytes);
  const collect = (first: number, count: number) =>
    out.set(mem().subarray(scratch.out, scratch.out + count * entryBytes), first * entryBytes);
  if (inCoreMemory(data)) {
    for (let first = 0; first < blocks; first += MAX_BATCH_BLOCKS) {
      const start = first * blockSize;
      const len = Math.min(data.length - start, MAX_BATCH_BLOCKS * blockSize);
      batch(data.byteOffset + start, len, scratch.out);
      collect(first, Math.ceil(len / blockSize));
    }
    return out;
  }
  if (blockSize > WINDOW_BYTES) {
    for (let i = 0; i < blocks; i++) {
      out.set(single(data.subarray(i * blockSize, (i + 1) * blockSize)), i * entryBytes);
    }
    return out;
  }
  const blocksPerPiece = Math.min(Math.floor(WINDOW_BYTES / blockSize), MAX_BATCH_BLOCKS);
  for (let first = 0; first < blocks; first += blocksPerPiece) {
    const piece = data.subarray(first * blockSize, (first + blocksPerPiece) * blockSize);
    copyIn(piece, scratch.input);
    batch(scratch.input, piece.length, scratch.out);
    collect(first, Math.ceil(piece.length / blockSize));
  }
  return out;
}
