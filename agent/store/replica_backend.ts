/**
 * The replica back-end contract: where the bytes of a destination store live. The commit
 * protocol (stage, prepare, commit record, apply, recover; `ReplicaVolume`) is presync's and
 * knows every format (docs/STORE.md); a back end only keeps bytes and makes them durable
 * when asked. The directory layout (`plugins/store-directory`) is the first back end; every
 * back end passes `fixtures/backend_contract.ts`.
 *
 * Durability, in every method: a call that resolves has done what it says durably only where
 * its doc says so (`flush`, `sync`, the atomic record writes); a crash may lose anything else.
 * Errors are `PresyncError`s: `NO_SPACE` when the storage is full (retryable), `IO` for
 * other failures, `VOLUME_NOT_FOUND` for a volume that is not there.
 * Methods are called by one `ReplicaStore` per process; a volume may be open several times
 * (the sync server's replica and an export) and must then see its own durable writes.
 *
 * Optional abilities are tiny extra interfaces, tested with their guards
 * ({@linkcode canClaimSpace}, {@linkcode reservesNoSpace}, {@linkcode canPunchHoles},
 * {@linkcode keepsSnapshots},
 * {@linkcode hasSpaceUsage}), as restic's back ends do.
 *
 * @module
 */

import type { Bitmap } from "../core/mod.ts";
import type { FileHandle, FileLock } from "../fs/file_system.ts";
import type { VolumeIdentity } from "../volume/volume_identity.ts";

/** A store of replicas, one per volume name. */
export interface ReplicaBackend {
  /** Where the store is, for messages (a directory, `rbd:POOL`…). */
  readonly location: string;
  /**
   * Names of the volumes that have metadata (a volume being created or removed has none),
   * sorted. No side effects; called for status, often.
   */
  list(): Promise<string[]>;
  /**
   * The volume `name`, whether it exists or not (no I/O). Throws `INVALID_VOLUME_NAME` for a
   * name that is not valid, so no name can reach outside the store.
   */
  volume(name: string): VolumeBackend;
  /**
   * Makes a fresh volume of `identity`: an all-zero image of `identity.sizeBytes` and an
   * all-zero manifest of 32 bytes per block, both durable, and no metadata yet (the protocol
   * writes it). Whatever was left of an earlier volume of that name without metadata (a
   * crashed create or remove) is cleared first. Throws `VOLUME_EXISTS` when the volume has
   * metadata. Idempotent until the metadata is written; called once per new replica.
   */
  create(identity: VolumeIdentity): Promise<void>;
  /**
   * Removes volume `name` and all it holds (image, manifest, metadata, staging, its default
   * overlay). The metadata goes first and durably: a crash at any instant leaves either the
   * whole volume or a remnant that `list()` omits and `create()` clears. The caller holds the
   * volume's exclusive lock. Idempotent; a missing volume is not an error.
   */
  remove(name: string): Promise<void>;
}

/** One volume of a {@linkcode ReplicaBackend}. */
export interface VolumeBackend {
  readonly name: string;
  /** Where the volume is, for messages (`/srv/store/db1`, `rbd:pool/presync-db1`…). */
  readonly location: string;
  /**
   * Where a writable export of this volume keeps its copy-on-write overlay by default (a
   * local file path; `remove` removes it with the volume).
   */
  readonly overlayPath: string;
  /**
   * The metadata record (meta.json's bytes), or null when the volume has none. No side
   * effects; called on every open, status and listing.
   */
  readMeta(): Promise<Uint8Array | null>;
  /**
   * Replaces the metadata record atomically and durably: after a crash, a read returns the
   * old bytes or these, never a mix. Called once per commit (and at creation); a retry after
   * a failure writes the same bytes again.
   */
  writeMeta(bytes: Uint8Array): Promise<void>;
  /**
   * Opens the image, once per open replica or export (several may be open at once, in one
   * process or several). Throws `VOLUME_NOT_FOUND` when it is missing.
   */
  openImage(mode: "read" | "write"): Promise<ReplicaImage>;
  /**
   * Opens the manifest: 32 bytes per block, positioned I/O; durable after `sync()`. Its size
   * never changes after `create`.
   */
  openManifest(mode: "read" | "write"): Promise<FileHandle>;
  /** The volume's staging area (at most one generation is staged at a time). */
  readonly staging: StagingBackend;
  /**
   * Takes the volume's advisory lock without waiting, across processes: every open replica
   * or export holds it shared, `remove` needs it exclusive. Resolves null when a conflicting
   * lock is held. Throws `VOLUME_NOT_FOUND` when the volume does not exist.
   */
  lock(mode: "shared" | "exclusive"): Promise<FileLock | null>;
}

/**
 * The volume's image: positioned I/O of exactly `sizeBytes` bytes. The protocol writes
 * disjoint ranges with up to `writeWindow` writes in flight, so a back end whose writes are
 * round trips (RBD) keeps its pipe full.
 */
export interface ReplicaImage {
  readonly sizeBytes: number;
  /** Most writes the protocol keeps in flight at once (at least 1). */
  readonly writeWindow: number;
  /** Fills `into` from `offset`; the range must lie inside the image. */
  read(offset: number, into: Uint8Array): Promise<void>;
  /**
   * Writes `data` at `offset` (inside the image). Not durable until {@linkcode flush}. After
   * a failure the range holds old bytes, new bytes or a mix; the protocol writes it again.
   */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every write that resolved before this call durable. Idempotent. */
  flush(): Promise<void>;
  /** Closes; calls in flight finish first. Idempotent. */
  close(): void;
}

/** Optional ability of an image: claim space without changing content (`fallocate`). */
export interface SpaceClaim {
  /**
   * Reserves storage for `[offset, offset + length)` so later writes there cannot fail for
   * lack of space; what the range reads does not change. Resolves false when the storage
   * cannot (the protocol writes zeros over holes instead, unless the image declares
   * {@linkcode NoSpaceReservation}); throws `NO_SPACE` when full. Durable after `flush()`.
   * Idempotent.
   */
  claim(offset: number, length: number): Promise<boolean>;
}

/**
 * Optional declaration of an image: its storage cannot reserve space ahead of a write at all
 * (RBD: objects are allocated when written and BlueStore allocates anew on every overwrite,
 * so neither a claim nor zeros written over a hole keep space for the data that follows).
 * The protocol then skips a commit's space claim, its zero writes over holes and its rewrite
 * of the manifest entries (the manifest is kept by the same storage); a full
 * store fails in the apply instead, after the commit record, and the commit is replayed once
 * space is freed (the apply is idempotent). Never together with {@linkcode SpaceClaim}.
 */
export interface NoSpaceReservation {
  readonly reservesNoSpace: true;
}

/**
 * Optional ability of an image: where it holds data. An export of a kept generation, whose
 * manifest is not kept, reports the rest as holes (NBD block status) instead of all data.
 */
export interface DataExtents {
  /**
   * `[offset, length]` ranges, in offset order, outside which the image reads as zeros (a
   * range may read zeros too). No side effects.
   */
  dataExtents(): Promise<Array<[offset: number, length: number]>>;
}

/** Optional ability of an image: deallocate a range so it reads as zeros (hole, discard). */
export interface HolePunch {
  /**
   * Makes `[offset, offset + length)` read as zeros and frees its storage. Resolves false
   * when the storage cannot (the protocol writes zeros instead). Durable after `flush()`.
   * Idempotent.
   */
  punchHole(offset: number, length: number): Promise<boolean>;
}

/**
 * Optional ability of an image: keep each committed generation as a snapshot (RBD
 * `rbd_snap_create`), the ground for retention and rollback (issue 18).
 */
export interface GenerationSnapshots {
  /**
   * Records the image's flushed content as generation `generation`. Called once per commit,
   * after the image is flushed and before the metadata names the generation (while the
   * manifest takes the generation's entries); called again with the same generation when a
   * crash made the commit replay: must then succeed without changing the snapshot already
   * taken. Idempotent.
   */
  snapshotGeneration(generation: number): Promise<void>;
  /**
   * Drops the kept generations that retention no longer keeps once `generation` is committed
   * (never `generation` itself). Called once per commit after {@linkcode snapshotGeneration},
   * while (or after) the metadata names the generation and before the staging area is
   * removed; called again by recovery while the commit record is still there. Idempotent.
   */
  pruneGenerations(generation: number): Promise<void>;
}

/** A committed generation a volume keeps read-only ({@linkcode KeptGenerations}). */
export interface KeptGeneration {
  generation: number;
  /** The image's size in that generation. */
  sizeBytes: number;
  /** When the generation was kept (ms since the epoch, the storage's clock). */
  createdAtMs: number;
}

/**
 * Optional ability of a volume: committed generations kept read-only (RBD snapshots, taken
 * through {@linkcode GenerationSnapshots}; directory undo logs, {@linkcode UndoBeforeApply}), the ground for exporting an older generation and
 * for rolling back (issue 18).
 */
export interface KeptGenerations {
  /** The generations kept, oldest first. No side effects. */
  generations(): Promise<KeptGeneration[]>;
  /**
   * Opens kept generation `generation` read-only (its `write` fails). Throws
   * `VOLUME_NOT_FOUND` when it is not kept.
   */
  openGeneration(generation: number): Promise<ReplicaImage>;
  /** The metadata record written when `generation` was committed, or null when not kept. */
  readGenerationMeta(generation: number): Promise<Uint8Array | null>;
  /**
   * Makes the image's head equal to kept generation `generation` again and drops the kept
   * generations after it. Idempotent; the caller holds the volume's exclusive lock and
   * records its intent first (a crash may leave the head anywhere between).
   */
  rollbackImage(generation: number): Promise<void>;
}

/**
 * Optional ability of a volume: keep older generations by saving, before a commit's apply
 * overwrites the image, what it overwrites (the directory back end's undo logs).
 */
export interface UndoBeforeApply {
  /**
   * Called once per commit of `generation` (not the first, staged in place), after the
   * commit record and before the first write to the image: saves durably the bytes and
   * manifest entries of `blocks` as they are in `generation - 1`, then drops what retention
   * no longer keeps. Called again when a crash made the commit replay: a saved log is whole
   * and is kept as it is (the image may already hold new bytes). Idempotent.
   */
  saveUndo(generation: number, blocks: Bitmap): Promise<void>;
}

/** Optional ability of a back end: how much storage a volume takes. */
export interface SpaceUsage {
  /** Bytes of storage volume `name` occupies now (image, manifest, staging). No side effects. */
  allocatedBytes(name: string): Promise<number>;
}

/** The small records of a staging area (docs/STORE.md names their formats). */
export type StagingRecord =
  | "header"
  | "dirty"
  | "received"
  | "fold"
  | "received.folded"
  | "commit"
  | "rollback";

/**
 * Where one generation is staged: small records, each replaced atomically, an append-only
 * log and a manifest-shaped file of staged hashes. The protocol creates the area, writes the
 * `header` record last (its presence means the area is complete) and discards it after a
 * commit or when its generation can no longer commit.
 */
export interface StagingBackend {
  /** Where the area is, for messages. */
  readonly location: string;
  /**
   * Whether anything of an area is left: a complete one, a half-created one, or one being
   * discarded when the process died. No side effects.
   */
  exists(): Promise<boolean>;
  /** Makes an empty area, durably. Called only when `exists()` is false. */
  create(): Promise<void>;
  /** Record `name`, or null when it was never written. */
  read(name: StagingRecord): Promise<Uint8Array | null>;
  /** Replaces record `name` atomically and durably (old bytes or new after a crash). */
  write(name: StagingRecord, bytes: Uint8Array): Promise<void>;
  /** Opens the log (created empty when missing); durable after `sync()`. */
  openLog(): Promise<FileHandle>;
  /** Opens the staged-hashes file (created empty when missing); durable after `sync()`. */
  openHashes(): Promise<FileHandle>;
  /**
   * Removes the area: once it starts, a crash leaves nothing that `read("header")` returns;
   * after it resolves, `exists()` is false. Idempotent.
   */
  discard(): Promise<void>;
}

/** Whether `image` can claim space ({@linkcode SpaceClaim}). */
export function canClaimSpace(image: ReplicaImage): image is ReplicaImage & SpaceClaim {
  return typeof (image as Partial<SpaceClaim>).claim === "function";
}

/** Whether `image` declares that it cannot reserve space ({@linkcode NoSpaceReservation}). */
export function reservesNoSpace(image: ReplicaImage): image is ReplicaImage & NoSpaceReservation {
  return (image as Partial<NoSpaceReservation>).reservesNoSpace === true;
}

/** Whether `image` reports where it holds data ({@linkcode DataExtents}). */
export function hasDataExtents(image: ReplicaImage): image is ReplicaImage & DataExtents {
  return typeof (image as Partial<DataExtents>).dataExtents === "function";
}

/** Whether `image` can punch holes ({@linkcode HolePunch}). */
export function canPunchHoles(image: ReplicaImage): image is ReplicaImage & HolePunch {
  return typeof (image as Partial<HolePunch>).punchHole === "function";
}

/** Whether `image` keeps generations as snapshots ({@linkcode GenerationSnapshots}). */
export function keepsSnapshots(
  image: ReplicaImage,
): image is ReplicaImage & GenerationSnapshots {
  return typeof (image as Partial<GenerationSnapshots>).snapshotGeneration === "function";
}

/** Whether `volume` keeps committed generations ({@linkcode KeptGenerations}). */
export function keepsGenerations(
  volume: VolumeBackend,
): volume is VolumeBackend & KeptGenerations {
  return typeof (volume as Partial<KeptGenerations>).openGeneration === "function";
}

/** Whether `volume` saves what a commit overwrites ({@linkcode UndoBeforeApply}). */
export function savesUndo(volume: VolumeBackend): volume is VolumeBackend & UndoBeforeApply {
  return typeof (volume as Partial<UndoBeforeApply>).saveUndo === "function";
}

/** Whether `backend` reports storage use ({@linkcode SpaceUsage}). */
export function hasSpaceUsage(backend: ReplicaBackend): backend is ReplicaBackend & SpaceUsage {
  return typeof (backend as Partial<SpaceUsage>).allocatedBytes === "function";
}
