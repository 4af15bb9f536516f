import type { PositionalFile } from "./_positional_file.ts";
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "./nbd_constants.ts";
import type { StatusExtent } from "./reply_codec.ts";

/** Zero bytes written per call when the file system can do neither punch nor zero range. */
const ZERO_PIECE_BYTES = 1 << 20;

/** How {@linkcode zeroFileRange} made a range read as zeros. */
export type ZeroMethod = "punched" | "zero-range" | "written";

/** Options of {@linkcode zeroFileRange}. */
export interface ZeroOptions {
  /**
   * Keep the range allocated (`NBD_CMD_FLAG_NO_HOLE`): `FALLOC_FL_ZERO_RANGE`, else zero
   * bytes written. Default false: punch a hole.
   */
  noHole?: boolean;
}

/**
 * Makes `[offset, offset+length)` of `file` read as zeros at the least cost the file system
 * allows: a hole punched (`FALLOC_FL_PUNCH_HOLE`; ext4, xfs, btrfs, tmpfs), else zeros
 * allocated in place (`FALLOC_FL_ZERO_RANGE`; ext4, xfs), else zero bytes written (ramfs,
 * vfat, or no FFI). With `noHole` the punch is skipped. Unaligned edges are fine: the kernel
 * zeroes the partial file system blocks and frees only whole ones.
 */
export async function zeroFileRange(
  file: PositionalFile,
  offset: number,
  length: number,
  options: ZeroOptions = {},
): Promise<ZeroMethod> {
  if (!options.noHole && await file.punchHole(offset, length)) return "punched";
  if (await file.zeroRange(offset, length)) return "zero-range";
  const zeros = new Uint8Array(Math.min(length, ZERO_PIECE_BYTES));
  for (let at = 0; at < length; at += zeros.length) {
    await file.write(offset + at, zeros.subarray(0, Math.min(zeros.length, length - at)));
  }
  return "written";
}

/**
 * The `base:allocation` status of `[offset, offset+length)` of `file` from its real
 * allocation: holes as `HOLE | ZERO`, data as 0 (it may still hold zero bytes). Consecutive
 * extents from `offset`, at least one, at most `maxExtents`.
 */
export async function fileAllocation(
  file: PositionalFile,
  offset: number,
  length: number,
  maxExtents?: number,
): Promise<StatusExtent[]> {
  const extents = await file.extents(offset, length, maxExtents);
  return extents.map((e) => ({
    lengthBytes: e.length,
    flags: e.data ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO,
  }));
}
