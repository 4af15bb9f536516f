import { ErrorCode, PresyncError } from "../errors.ts";
import { Bitmap } from "./bitmap.ts";
import { HASH_BYTES } from "./hash_blocks.ts";
import { copyIn, core, scratch, WINDOW_BYTES } from "./_wasm.ts";

/**
 * The blocks whose hashes differ between two manifests (arrays of 32-byte block hashes,
 * block i at byte 32·i), including blocks present in only one: a bitmap of
 * `max(old, new)` blocks.
 *
 * @example
 * ```ts
 * import { diffManifests } from "./mod.ts";
 * const before = new Uint8Array(3 * 32);
 * const after = before.slice();
 * after[32] = 1; // block 1 changed
 * using changed = diffManifests(before, after);
 * console.assert(changed.get(1) && changed.popcount() === 1);
 * ```
 */
export function diffManifests(oldHashes: Uint8Array, newHashes: Uint8Array): Bitmap {
  for (const [name, hashes] of [["old", oldHashes], ["new", newHashes]] as const) {
    if (hashes.length % HASH_BYTES !== 0) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `${name} manifest length must be a multiple of ${HASH_BYTES} bytes: received ${hashes.length}`,
      );
    }
  }
  const oldCount = oldHashes.length / HASH_BYTES;
  const newCount = newHashes.length / HASH_BYTES;
  const common = Math.min(oldCount, newCount);
  const changed = new Bitmap(Math.max(oldCount, newCount));
  // Each piece puts old hashes in the first half of the window and new ones in the second.
  const perPiece = WINDOW_BYTES / 2 / HASH_BYTES;
  const newArea = scratch.input + WINDOW_BYTES / 2;
  for (let first = 0; first < common; first += perPiece) {
    const count = Math.min(perPiece, common - first);
    const from = first * HASH_BYTES;
    const to = from + count * HASH_BYTES;
    copyIn(oldHashes.subarray(from, to), scratch.input);
    copyIn(newHashes.subarray(from, to), newArea);
    core.diffHashes(scratch.input, newArea, count, changed.wasmPointer, first);
  }
  if (changed.size > common) changed.setRange(common, changed.size - common);
  return changed;
}
