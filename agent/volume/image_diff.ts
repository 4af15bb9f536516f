import { diffManifests, type Extent } from "../core/mod.ts";
import type { FileHandle } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { blockEntries } from "./block_hashes.ts";
import type { ManifestFile } from "./manifest_file.ts";
import { blockCount, type VolumeIdentity } from "./volume_identity.ts";

/** Bytes of image read per step when comparing an image with a manifest. */
const PIECE_BYTES = 8 * 1024 * 1024;

/**
 * The blocks of the image `file` whose content does not match `manifest`, as runs. The
 * image is read in pieces of 8 MiB (or one block when blocks are larger); memory stays
 * bounded whatever the volume size.
 */
export async function diffImageWithManifest(
  file: Pick<FileHandle, "read">,
  manifest: ManifestFile,
  identity: VolumeIdentity,
): Promise<Extent[]> {
  const { blockSize, sizeBytes } = identity;
  const blocks = blockCount(identity);
  const perPiece = Math.max(1, Math.floor(PIECE_BYTES / blockSize));
  const buffer = new Uint8Array(perPiece * blockSize);
  const runs: Extent[] = [];
  for (let first = 0; first < blocks; first += perPiece) {
    const count = Math.min(perPiece, blocks - first);
    const want = Math.min(count * blockSize, sizeBytes - first * blockSize);
    const data = buffer.subarray(0, want);
    const n = await io("read image", () => file.read(first * blockSize, data));
    data.fill(0, n);
    using changed = diffManifests(await manifest.read(first, count), blockEntries(data, blockSize));
    for (const [start, length] of changed.extents()) {
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === first + start) last[1] += length;
      else runs.push([first + start, length]);
    }
  }
  return runs;
}
