/**
 * Rollback: a replica returns to an older committed generation that its back end kept
 * (RBD snapshots, `serve --keep N`). Crash-safe through a `rollback` record in the staging
 * area (docs/STORE.md, "Rollback"): written first, it makes every later open finish the
 * rollback before anything else.
 *
 * @module
 */

import { blockEntries } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { io } from "../fs/io_error.ts";
import { ENTRY_BYTES } from "../volume/block_hashes.ts";
import { blockCount } from "../volume/volume_identity.ts";
import { keepsGenerations, type KeptGenerations, type VolumeBackend } from "./replica_backend.ts";
import { parseReplicaMeta, readReplicaMeta, writeReplicaMeta } from "./replica_meta.ts";

/** Blocks hashed per read while the manifest is rebuilt (bounded memory: 64 MiB at 1 MiB). */
const REBUILD_PIECE_BYTES = 8 << 20;

/**
 * Rolls volume `backend` back to kept committed generation `generation`. The caller holds
 * the volume's exclusive lock (no source connected, no export).
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` when the back end keeps no generations or
 *   `generation` is not older than the committed one, `VOLUME_NOT_FOUND` when it is not kept
 */
export async function rollbackVolume(backend: VolumeBackend, generation: number): Promise<void> {
  if (!keepsGenerations(backend)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${backend.location} keeps only its last committed generation: nothing to roll back to ` +
        `(a store keeps older generations with serve --keep N)`,
    );
  }
  const meta = await readReplicaMeta(backend);
  if (
    !Number.isSafeInteger(generation) || generation < 1 || generation > meta.committedGeneration
  ) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `volume ${backend.name} can roll back to a committed generation from 1 to ` +
        `${meta.committedGeneration}: received ${generation}`,
    );
  }
  const record = await backend.readGenerationMeta(generation);
  if (!record) {
    const kept = (await backend.generations()).map((g) => g.generation);
    throw new PresyncError(
      ErrorCode.VOLUME_NOT_FOUND,
      `generation ${generation} of volume ${backend.name} is not kept in ${backend.location} ` +
        `(kept: ${kept.join(", ") || "none"})`,
    );
  }
  parseReplicaMeta(record, backend);
  const staging = backend.staging;
  await io(`remove ${staging.location}`, async () => {
    // What was being staged followed the generation the replica leaves: it cannot commit.
    await staging.discard();
    await staging.create();
    await staging.write("rollback", record);
  });
  await finishRollback(backend);
}

/**
 * Finishes a rollback whose record is in the staging area (idempotent: a crash anywhere in
 * it is repaired by running it again): the image's head returns to the snapshot, the
 * manifest is rebuilt from it, the generation's metadata becomes the volume's, and the
 * staging area goes. Returns false when there is no rollback record.
 */
export async function finishRollback(backend: VolumeBackend): Promise<boolean> {
  const staging = backend.staging;
  const record = await io(`read ${staging.location}`, () => staging.read("rollback"));
  if (!record) return false;
  if (!keepsGenerations(backend)) {
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `${staging.location} holds a rollback record but ${backend.location} keeps no generations`,
    );
  }
  const meta = parseReplicaMeta(record, backend);
  await backend.rollbackImage(meta.committedGeneration);
  await rebuildManifest(backend, meta.identity.blockSize, blockCount(meta.identity));
  await io(
    `write ${backend.location} metadata`,
    () => writeReplicaMeta(backend, { ...meta, committedAtMs: Date.now() }),
  );
  await io(`remove ${staging.location}`, () => staging.discard());
  return true;
}

/** Writes the manifest entries of the image's head, in pieces, then syncs the manifest. */
async function rebuildManifest(
  backend: VolumeBackend & KeptGenerations,
  blockSize: number,
  blocks: number,
): Promise<void> {
  const image = await backend.openImage("read");
  const manifest = await io(
    `open ${backend.location} manifest`,
    () => backend.openManifest("write"),
  );
  try {
    const piece = Math.max(1, Math.floor(REBUILD_PIECE_BYTES / blockSize)) * blockSize;
    const buffer = new Uint8Array(piece);
    for (let offset = 0; offset < image.sizeBytes; offset += piece) {
      const bytes = buffer.subarray(0, Math.min(piece, image.sizeBytes - offset));
      await image.read(offset, bytes);
      await manifest.write((offset / blockSize) * ENTRY_BYTES, blockEntries(bytes, blockSize));
    }
    if (Math.ceil(image.sizeBytes / blockSize) !== blocks) {
      throw new PresyncError(
        ErrorCode.STORE_CORRUPT,
        `${backend.location}: the image has ${image.sizeBytes} bytes, not ${blocks} blocks`,
      );
    }
    await manifest.sync();
  } finally {
    manifest.close();
    image.close();
  }
}
