import { io } from "../fs/io_error.ts";
import { ManifestFile } from "../volume/manifest_file.ts";
import type { VolumeBackend } from "./replica_backend.ts";

/**
 * The manifest of the replica `backend` holds (`blocks` entries), opened for `mode`; an I/O
 * failure names the volume's manifest.
 */
export async function openManifest(
  backend: VolumeBackend,
  blocks: number,
  mode: "read" | "write",
): Promise<ManifestFile> {
  return await ManifestFile.over(
    await io(`open ${backend.location} manifest`, () => backend.openManifest(mode)),
    `${backend.location} manifest`,
    blocks,
  );
}
