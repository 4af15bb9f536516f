import type { Extent } from "../core/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { io } from "../fs/io_error.ts";
import { toHex } from "../hex.ts";
import { diffImageWithManifest } from "../volume/image_diff.ts";
import type { ManifestFile } from "../volume/manifest_file.ts";
import type { VolumeIdentity } from "../volume/volume_identity.ts";
import type { ReplicaImage } from "./replica_backend.ts";

/** What {@linkcode verifyReplica} checks besides the image against its own manifest. */
export interface VerifyOptions {
  /** The Merkle root the replica must have (hex). */
  expectedRoot?: string;
  /** A source image file on this machine to compare with, block by block. */
  sourceImage?: string;
  /** Check only the root (reads the manifest, not the image). */
  rootOnly?: boolean;
}

/** Result of a replica check. */
export interface VerifyReport {
  /** True when every check asked for passed. */
  ok: boolean;
  /** The replica's Merkle root, from its manifest (hex). */
  merkleRoot: string;
  /** Whether it equals the root that was asked for (absent when none was given). */
  rootMatches?: boolean;
  /** Blocks whose bytes on disk do not match the replica's own manifest (bit rot). */
  damaged: Extent[];
  /** Blocks that differ from the source image (only when one was given). */
  differsFromSource?: Extent[];
}

/**
 * Checks a replica: its image against its own manifest (finds damaged blocks; skipped with
 * `rootOnly`), its Merkle root against `expectedRoot` when given, and the local source image
 * `sourceImage` against the manifest when given (both sites on this machine).
 */
export async function verifyReplica(
  image: ReplicaImage,
  manifest: ManifestFile,
  identity: VolumeIdentity,
  options: VerifyOptions,
): Promise<VerifyReport> {
  const merkleRoot = toHex(await manifest.root());
  // The reader may ask past the image's end (a short last block): clamp.
  const reader = {
    read: async (offset: number, into: Uint8Array) => {
      const n = Math.max(0, Math.min(into.length, image.sizeBytes - offset));
      await image.read(offset, into.subarray(0, n));
      return n;
    },
  };
  const damaged = options.rootOnly ? [] : await diffImageWithManifest(reader, manifest, identity);
  const report: VerifyReport = { ok: damaged.length === 0, merkleRoot, damaged };
  if (options.expectedRoot !== undefined) {
    report.rootMatches = merkleRoot === options.expectedRoot;
    report.ok &&= report.rootMatches;
  }
  if (options.sourceImage !== undefined) {
    const path = options.sourceImage;
    const source = await io(`open ${path}`, () => new DenoFileSystem().open(path));
    try {
      report.differsFromSource = await diffImageWithManifest(source, manifest, identity);
    } finally {
      source.close();
    }
    report.ok &&= report.differsFromSource.length === 0;
  }
  return report;
}
