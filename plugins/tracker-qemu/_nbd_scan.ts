import { Bitmap, blockEntries, diffManifests } from "../../agent/core/mod.ts";
import type { NbdClient } from "../../agent/nbd/mod.ts";
import type { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { blockCount, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { yieldToEventLoop } from "../../agent/yield.ts";

/** Bytes read per request while scanning. */
export const SCAN_PIECE_BYTES = 8 * 1024 * 1024;

/**
 * The blocks whose content, read through `client` (an NBD export of the disk), differs
 * from `manifest` (the block hashes the destination has or will have).
 */
export async function scanAgainstManifest(
  client: NbdClient,
  manifest: ManifestFile,
  identity: VolumeIdentity,
): Promise<Bitmap> {
  const { blockSize, sizeBytes } = identity;
  const blocks = blockCount(identity);
  const perPiece = Math.max(1, Math.floor(SCAN_PIECE_BYTES / blockSize));
  const dirty = new Bitmap(blocks);
  try {
    for (let first = 0; first < blocks; first += perPiece) {
      const count = Math.min(perPiece, blocks - first);
      const length = Math.min(count * blockSize, sizeBytes - first * blockSize);
      const entries = blockEntries(await client.read(first * blockSize, length), blockSize);
      using changed = diffManifests(await manifest.read(first, count), entries);
      for (const [start, run] of changed.extents()) dirty.setRange(first + start, run);
      await yieldToEventLoop();
    }
    return dirty;
  } catch (err) {
    dirty.free();
    throw err;
  }
}
