import { ErrorCode, PresyncError } from "../errors.ts";
import { parseVolumeIdentity, type VolumeIdentity } from "../volume/volume_identity.ts";
import type { VolumeBackend } from "./replica_backend.ts";

/** Format version of the metadata record (meta.json, docs/STORE.md). */
const META_VERSION = 1;

/** What the metadata record holds: the committed state of a replica. */
export interface ReplicaMeta {
  identity: VolumeIdentity;
  /** Last committed generation; 0 for a new, all-zero replica. */
  committedGeneration: number;
  /** Merkle root of the replica at that generation (hex). */
  merkleRoot: string;
  /** When the source cut that generation (ms since the epoch); its age is the RPO. */
  cutTimeMs: number;
  /** When the destination committed it. */
  committedAtMs: number;
}

/** The commit record (docs/STORE.md): written before applying, replayed after a crash. */
export interface CommitRecord {
  generation: number;
  merkleRoot: string;
  cutTimeMs: number;
}

const HEX_ROOT = /^[0-9a-f]{64}$/;

/** Writes the metadata record of `volume` (atomically, through the back end). */
export function writeReplicaMeta(volume: VolumeBackend, meta: ReplicaMeta): Promise<void> {
  return volume.writeMeta(
    new TextEncoder().encode(JSON.stringify({ version: META_VERSION, ...meta }, null, 2)),
  );
}

/**
 * Reads the metadata record of `volume` without side effects (no crash recovery: see
 * `ReplicaStore.open`). Throws `VOLUME_NOT_FOUND` when there is none and `STORE_CORRUPT`
 * when it is damaged.
 */
export async function readReplicaMeta(volume: VolumeBackend): Promise<ReplicaMeta> {
  const bytes = await volume.readMeta();
  if (!bytes) {
    throw new PresyncError(
      ErrorCode.VOLUME_NOT_FOUND,
      `no replica of volume ${volume.name} at ${volume.location} (it has no metadata)`,
    );
  }
  return parseReplicaMeta(bytes, volume);
}

/**
 * Parses a metadata record of `volume` (the current one, or one a back end kept for an older
 * generation). Throws `STORE_CORRUPT` when it is damaged.
 */
export function parseReplicaMeta(
  bytes: Uint8Array,
  volume: Pick<VolumeBackend, "name" | "location">,
): ReplicaMeta {
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (value.version !== META_VERSION) throw new Error(`unknown version ${value.version}`);
    const meta: ReplicaMeta = {
      identity: parseVolumeIdentity(value.identity),
      committedGeneration: value.committedGeneration,
      merkleRoot: value.merkleRoot,
      cutTimeMs: value.cutTimeMs,
      committedAtMs: value.committedAtMs,
    };
    if (
      !Number.isSafeInteger(meta.committedGeneration) || meta.committedGeneration < 0 ||
      typeof meta.merkleRoot !== "string" || !HEX_ROOT.test(meta.merkleRoot) ||
      !Number.isFinite(meta.cutTimeMs) || !Number.isFinite(meta.committedAtMs)
    ) {
      throw new Error("a field is missing or out of range");
    }
    return meta;
  } catch (cause) {
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `the metadata of replica ${volume.name} at ${volume.location} is damaged (${
        cause instanceof Error ? cause.message : cause
      }); the replica cannot be trusted: restore it (meta.json in a directory store), or ` +
        `delete the volume (presync delete ${volume.name} --yes) and sync it again`,
      { cause },
    );
  }
}

/** The bytes of a commit record. */
export function encodeCommitRecord(record: CommitRecord): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(record));
}

/** Parses a commit record read from `location`; throws `STORE_CORRUPT` when damaged. */
export function parseCommitRecord(bytes: Uint8Array, location: string): CommitRecord {
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (
      Number.isSafeInteger(value.generation) && HEX_ROOT.test(value.merkleRoot) &&
      Number.isFinite(value.cutTimeMs)
    ) {
      return {
        generation: value.generation,
        merkleRoot: value.merkleRoot,
        cutTimeMs: value.cutTimeMs,
      };
    }
  } catch {
    // Reported below.
  }
  throw new PresyncError(ErrorCode.STORE_CORRUPT, `${location}/COMMIT is damaged`);
}
