/**
 * Block patches: the changed byte runs of one block, to be laid over the receiver's copy of
 * it (docs/PROTOCOL.md, "Block patches"). Pure functions, no I/O. A patch travels inside a
 * block frame (compressed like a block), so it is bounded by {@linkcode maxPatchLength}.
 *
 * ```
 * offset 0          runCount  u8      1 to 255
 * offset 1 + 8·i    offset    u32 LE  where run i starts in the block
 * offset 5 + 8·i    length    u32 LE  its length (≥ 1)
 * offset 1 + 8·n    bytes     ...     the runs' new bytes, one after the other
 * ```
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../errors.ts";

/** Most runs in one patch (the count is a u8). */
export const MAX_PATCH_RUNS = 255;
/** Bytes per run descriptor: u32 offset, u32 length. */
const RUN_BYTES = 8;

/** One run of a patch: new bytes for `[offset, offset + bytes.length)` of the block. */
export interface PatchRun {
  offset: number;
  bytes: Uint8Array;
}

/** The longest patch of a block of `blockSize` bytes a receiver accepts. */
export function maxPatchLength(blockSize: number): number {
  return 1 + MAX_PATCH_RUNS * RUN_BYTES + blockSize;
}

/**
 * Encodes the runs `[offset, length]` of `block` (in order, not overlapping) as a patch.
 *
 * @throws {RangeError} for no runs, more than {@linkcode MAX_PATCH_RUNS}, or a run outside
 *   the block or out of order
 */
export function encodePatch(block: Uint8Array, runs: [number, number][]): Uint8Array {
  if (runs.length < 1 || runs.length > MAX_PATCH_RUNS) {
    throw new RangeError(`a patch has 1 to ${MAX_PATCH_RUNS} runs: received ${runs.length}`);
  }
  let end = 0;
  let bytes = 0;
  for (const [offset, length] of runs) {
    if (offset < end || length < 1 || offset + length > block.length) {
      throw new RangeError(
        `patch run [${offset}, +${length}) must follow byte ${end} inside a ${block.length}-byte block`,
      );
    }
    end = offset + length;
    bytes += length;
  }
  const header = 1 + runs.length * RUN_BYTES;
  const patch = new Uint8Array(header + bytes);
  const view = new DataView(patch.buffer);
  patch[0] = runs.length;
  let at = header;
  runs.forEach(([offset, length], i) => {
    view.setUint32(1 + i * RUN_BYTES, offset, true);
    view.setUint32(5 + i * RUN_BYTES, length, true);
    patch.set(block.subarray(offset, offset + length), at);
    at += length;
  });
  return patch;
}

/**
 * Decodes a patch for a block of `blockLength` bytes; the runs' bytes are views of `patch`.
 *
 * @throws {PresyncError} `FRAME_MALFORMED` when it is not exactly a patch of that block:
 *   no runs, truncated, a run empty, out of order, overlapping or past the block's end, or
 *   bytes left over
 */
export function decodePatch(patch: Uint8Array, blockLength: number): PatchRun[] {
  const count = patch.length > 0 ? patch[0] : 0;
  const header = 1 + count * RUN_BYTES;
  if (count < 1 || patch.length < header) {
    throw malformed(
      `block patch of ${patch.length} bytes: expected a run count of 1 to ${MAX_PATCH_RUNS} ` +
        `and its ${header}-byte header`,
    );
  }
  const view = new DataView(patch.buffer, patch.byteOffset, patch.byteLength);
  const runs: PatchRun[] = [];
  let end = 0;
  let at = header;
  for (let i = 0; i < count; i++) {
    const offset = view.getUint32(1 + i * RUN_BYTES, true);
    const length = view.getUint32(5 + i * RUN_BYTES, true);
    if (offset < end || length < 1 || offset + length > blockLength) {
      throw malformed(
        `block patch run ${i} [${offset}, +${length}): expected a non-empty run after byte ` +
          `${end} inside the ${blockLength}-byte block`,
      );
    }
    if (at + length > patch.length) {
      throw malformed(`block patch truncated: run ${i} needs ${length} bytes at ${at}`);
    }
    runs.push({ offset, bytes: patch.subarray(at, at + length) });
    end = offset + length;
    at += length;
  }
  if (at !== patch.length) {
    throw malformed(`block patch has ${patch.length - at} bytes after its last run`);
  }
  return runs;
}

/** A copy of `base` with `runs` laid over it (runs from {@linkcode decodePatch} for it). */
export function applyPatch(base: Uint8Array, runs: PatchRun[]): Uint8Array {
  const block = base.slice();
  for (const { offset, bytes } of runs) block.set(bytes, offset);
  return block;
}

function malformed(message: string): PresyncError {
  return new PresyncError(ErrorCode.FRAME_MALFORMED, message);
}
