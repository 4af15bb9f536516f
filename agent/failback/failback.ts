/**
 * Fail-back: after an evacuation or a migration the VM runs at the destination on the
 * replica's copy-on-write overlay; fail-back sends the overlay's blocks back to the original
 * site as the next generation, so that the original image equals replica + overlay.
 *
 * - {@linkcode adoptOriginalImage} (original site) proves that the original image is the
 *   generation the replica holds — every block hashed and compared with the source agent's
 *   manifest — and makes it the replica of a directory store (hard-linked, never copied), so
 *   an ordinary `presync serve` receives into it with the usual staging and atomic commit.
 * - {@linkcode failBack} (the site where the VM ran) sends the overlay's present blocks as
 *   generation G+1 through the ordinary sender (`sendGeneration`): same verification, same
 *   resume after a link cut or a kill (its own source state records the generation in flight).
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { processesWithOpen } from "../fs/open_by.ts";
import { OverlayExport } from "../export/overlay_export.ts";
import { openReplica } from "../export/serve_replica.ts";
import { toHex } from "../hex.ts";
import { SourceState } from "../source/source_state.ts";
import type { ReplicaBackend } from "../store/replica_backend.ts";
import type { ReplicaStore } from "../store/replica_store.ts";
import { writeReplicaMeta } from "../store/replica_meta.ts";
import type { Destination } from "../sync/destination.ts";
import { sendGeneration, type SendOptions, type SendReport } from "../sync/send_generation.ts";
import type { Cut } from "../tracker.ts";
import { diffManifests } from "../core/mod.ts";
import { blockEntries, ENTRY_BYTES } from "../volume/block_hashes.ts";
import type { ManifestFile } from "../volume/manifest_file.ts";
import { openManifest } from "../store/open_manifest.ts";
import { blockCount, type VolumeIdentity } from "../volume/volume_identity.ts";
import type { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { LIVE_DIRTY_FILE } from "../../plugins/tracker-nbd/nbd_tracker.ts";

/** Bytes of the image hashed per read while proving it. */
const PROOF_READ_BYTES = 8 * 1024 * 1024;

/** Options of {@linkcode adoptOriginalImage}. */
export interface AdoptOptions {
  fs: FileSystem;
  /** The volume the operator named: the agent state must be its state. */
  volume: string;
  /** The original disk image (raw), on the same file system as the store. */
  imagePath: string;
  /** The original source agent's state directory of the volume (`--state DIR/VOLUME`). */
  agentStateDir: string;
  /** The directory store the image becomes the replica of (`serve --store DIR`). */
  backend: DirectoryBackend;
  /** Skip the proof: adopt the image as it is, for a full re-sync (every block is sent). */
  full?: boolean;
}

/** What {@linkcode adoptOriginalImage} found. */
export interface AdoptReport {
  volume: string;
  /** The generation the image was adopted as. */
  generation: number;
  /** Merkle root of the image (hex). */
  merkleRoot: string;
  /** Blocks whose bytes differ from the agent's manifest (0 unless `full`). */
  divergedBlocks: number;
  /** True when the store already held this adoption (a re-run): nothing was done. */
  already: boolean;
}

/**
 * Makes the original image the replica of `backend`'s volume at the generation the source
 * agent last sent (the pending one if a generation was in flight: its manifest already
 * names it). Holds the image's exclusive advisory lock while it reads, so two adoptions do
 * not race, and refuses an image another process has open (a QEMU still running the VM at
 * this site: presync would write under it). A re-run on a store that already adopted the
 * same file (same inode) is a no-op.
 *
 * @throws {PresyncError} `FAILBACK_DIVERGED` when a block of the image differs from the
 *   agent's manifest (written after the relocation: run with `full`), `STORE_BUSY` (image
 *   locked, or open in another process), `VOLUME_EXISTS` (another volume of that name in the
 *   store), `VOLUME_MISMATCH`, `IO`
 */
export async function adoptOriginalImage(options: AdoptOptions): Promise<AdoptReport> {
  const { fs, imagePath, backend } = options;
  const state = await SourceState.open(fs, options.agentStateDir);
  const { identity } = state;
  const generation = state.pending?.generation ?? state.committedGeneration;
  try {
    if (identity.name !== options.volume) {
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `${options.agentStateDir} is the agent state of volume ${identity.name}, not ` +
          `${options.volume}`,
      );
    }
    using lock = await io(`lock ${imagePath}`, () => fs.tryLock(imagePath, "exclusive"));
    if (!lock) {
      throw new PresyncError(
        ErrorCode.STORE_BUSY,
        `${imagePath} is locked by another presync process: wait for it or stop it`,
        { retryable: true },
      );
    }
    const openers = await io(
      `look for processes using ${imagePath}`,
      () => processesWithOpen(imagePath),
    );
    if (openers.length > 0) {
      const who = openers.map((p) => `${p.name} (pid ${p.pid})`).join(", ");
      throw new PresyncError(
        ErrorCode.STORE_BUSY,
        `${imagePath} is open in ${who}: stop the VM (and anything else using the image) at ` +
          `this site first; a VM must run in one place only`,
        { retryable: true },
      );
    }
    // serve writes the fail-back into this image, behind any tracker: the nbd tracker's set
    // saved at its last clean stop no longer covers every change, so its next start must
    // compare the image with the manifest instead of trusting it.
    await io(`remove ${options.agentStateDir}/${LIVE_DIRTY_FILE}`, async () => {
      await fs.remove(`${options.agentStateDir}/${LIVE_DIRTY_FILE}`);
      await fs.syncDir(options.agentStateDir);
    });
    const volume = backend.volume(identity.name);
    if (await volume.readMeta()) {
      const [ours, theirs] = await Promise.all([
        Deno.stat(imagePath),
        Deno.stat(backend.imagePath(identity.name)),
      ]);
      if (ours.ino !== theirs.ino || ours.dev !== theirs.dev) {
        throw new PresyncError(
          ErrorCode.VOLUME_EXISTS,
          `volume ${identity.name} in ${backend.location} is not ${imagePath}: remove it ` +
            `(presync delete) or choose another store`,
        );
      }
      return {
        volume: identity.name,
        generation,
        merkleRoot: "",
        divergedBlocks: 0,
        already: true,
      };
    }
    const { entries, diverged, first } = await hashImage(fs, imagePath, state);
    if (diverged > 0 && !options.full) {
      throw new PresyncError(
        ErrorCode.FAILBACK_DIVERGED,
        `${imagePath} is not generation ${generation} of ${identity.name}: ${diverged} blocks ` +
          `differ (first: block ${first}), so it was written after the relocation; only a ` +
          `full re-sync can bring it back: run presync failback --full at both sites`,
      );
    }
    await backend.adopt(identity, imagePath);
    const manifest = await replicaManifest(backend, identity, "write");
    let root: string;
    try {
      await manifest.write(0, entries);
      await manifest.sync();
      root = toHex(await manifest.root());
    } finally {
      manifest.close();
    }
    const now = Date.now();
    await writeReplicaMeta(volume, {
      identity,
      committedGeneration: generation,
      merkleRoot: root,
      cutTimeMs: state.pending?.cutTimeMs ?? now,
      committedAtMs: now,
    });
    return {
      volume: identity.name,
      generation,
      merkleRoot: root,
      divergedBlocks: diverged,
      already: false,
    };
  } finally {
    state.manifest.close();
  }
}

/** Every block's manifest entry of the image, and how many differ from the agent's. */
async function hashImage(
  fs: FileSystem,
  path: string,
  state: SourceState,
): Promise<{ entries: Uint8Array; diverged: number; first: number }> {
  const { blockSize } = state.identity;
  const blocks = blockCount(state.identity);
  const entries = new Uint8Array(blocks * ENTRY_BYTES);
  const perRead = Math.max(1, Math.floor(PROOF_READ_BYTES / blockSize));
  const file = await io(`open ${path}`, () => fs.open(path));
  let diverged = 0;
  let first = -1;
  try {
    const buffer = new Uint8Array(perRead * blockSize);
    for (let at = 0; at < blocks; at += perRead) {
      const count = Math.min(perRead, blocks - at);
      const length = Math.min(count * blockSize, state.identity.sizeBytes - at * blockSize);
      const data = buffer.subarray(0, length);
      const n = await io(`read ${path}`, () => file.read(at * blockSize, data));
      data.fill(0, n);
      const mine = blockEntries(data, blockSize);
      entries.set(mine, at * ENTRY_BYTES);
      using differing = diffManifests(await state.manifest.read(at, count), mine);
      if (first < 0 && !differing.isEmpty()) first = at + differing.extents().next().value![0];
      diverged += differing.popcount();
    }
  } finally {
    file.close();
  }
  return { entries, diverged, first };
}

/** Options of {@linkcode failBack}. */
export interface FailBackOptions {
  fs: FileSystem;
  /** The store holding the replica the VM ran on (this site's `serve --store`). */
  store: ReplicaStore;
  volume: string;
  /** The writable export's overlay (default: the store's, `<store>/<volume>.overlay`). */
  overlayPath?: string;
  /** This site's fail-back state: the generation in flight, for resuming (created on first use). */
  stateDir: string;
  /** Send every block, for an original image that diverged (see {@linkcode adoptOriginalImage}). */
  full?: boolean;
  /** Opens the original site's replica of `identity`; called again after each retryable failure. */
  connect(identity: VolumeIdentity): Promise<{ destination: Destination; close(): Promise<void> }>;
  /** Called after a retryable failure, before connecting again (backoff). */
  retry(error: PresyncError, attempt: number): Promise<void>;
  /** Passed to `sendGeneration` (tests kill there). */
  hooks?: SendOptions;
}

/** What {@linkcode failBack} did. */
export interface FailBackReport {
  volume: string;
  /** The generation committed at the original site. */
  generation: number;
  /** Blocks of the overlay (the generation's set). */
  blocks: number;
  /** Data bytes sent by this run (all attempts). */
  bytesSent: number;
  /** Blocks the original site already had staged (an earlier run). */
  alreadyStaged: number;
  merkleRoot: string;
  /** Attempts (1 when nothing failed). */
  attempts: number;
}

/**
 * Sends the overlay of `volume` back to the original site as generation G+1 (G: the
 * replica's committed generation) and commits it there. The overlay is held exclusively, so
 * the VM's export must have ended (the VM stopped): the generation is then exactly the disk
 * the VM left. Resumes a generation an earlier run left in flight.
 *
 * @throws {PresyncError} `FAILBACK_DIVERGED` when the original site's replica is not this
 *   replica's generation G (run both sides with `full`), `STORE_BUSY` (overlay in use), what
 *   the destination refused with, or a non-retryable error of the sender
 */
export async function failBack(options: FailBackOptions): Promise<FailBackReport> {
  const { fs } = options;
  const opened = await openReplica({
    store: options.store,
    volume: options.volume,
    writable: true,
    overlayPath: options.overlayPath ?? options.store.backend.volume(options.volume).overlayPath,
  });
  try {
    const overlay = opened.export;
    if (!(overlay instanceof OverlayExport)) throw new Error("a writable export has an overlay");
    const replica = await options.store.open(options.volume);
    const { identity } = replica;
    let state: SourceState;
    try {
      state = await fs.exists(`${options.stateDir}/state.json`)
        ? await SourceState.open(fs, options.stateDir)
        : await SourceState.initAt(
          fs,
          options.stateDir,
          identity,
          replica.meta.committedGeneration,
          await replicaManifest(options.store.backend, identity, "read"),
        );
    } finally {
      replica.close();
    }
    try {
      if (state.identity.uuid !== identity.uuid) {
        throw new PresyncError(
          ErrorCode.VOLUME_MISMATCH,
          `${options.stateDir} is the fail-back state of another volume ${state.identity.name} ` +
            `(${state.identity.uuid}): give an empty --state directory`,
        );
      }
      return await sendOverlay(options, state, overlay, opened.generation);
    } finally {
      state.manifest.close();
    }
  } finally {
    await opened.close();
  }
}

/** The manifest of `identity`'s replica in `backend`. */
async function replicaManifest(
  backend: ReplicaBackend,
  identity: VolumeIdentity,
  mode: "read" | "write",
): Promise<ManifestFile> {
  return await openManifest(backend.volume(identity.name), blockCount(identity), mode);
}

async function sendOverlay(
  options: FailBackOptions,
  state: SourceState,
  overlay: OverlayExport,
  base: number,
): Promise<FailBackReport> {
  const { blockSize } = state.identity;
  const report: FailBackReport = {
    volume: state.identity.name,
    generation: base + 1,
    blocks: 0,
    bytesSent: 0,
    alreadyStaged: 0,
    merkleRoot: "",
    attempts: 0,
  };
  for (;;) {
    report.attempts++;
    let link: Awaited<ReturnType<FailBackOptions["connect"]>> | null = null;
    try {
      link = await options.connect(state.identity);
      const info = await link.destination.resumeInfo();
      info.staged?.received.free();
      if (!state.pending && state.committedGeneration === base) {
        const root = toHex(await state.manifest.root());
        const same = info.committedGeneration === base && info.merkleRoot === root;
        if (!same && !options.full) {
          throw new PresyncError(
            ErrorCode.FAILBACK_DIVERGED,
            `the original site holds generation ${info.committedGeneration} of ` +
              `${state.identity.name} (root ${info.merkleRoot}), not generation ${base} ` +
              `(root ${root}) the VM ran on here: only a full re-sync can fail back; run ` +
              `presync failback --full at both sites`,
          );
        }
        using dirty = overlay.presentMap();
        if (options.full) dirty.setRange(0, dirty.size);
        await state.recordCut(dirty, Date.now());
      }
      const pending = state.pending;
      if (!pending) {
        report.generation = state.committedGeneration;
        report.merkleRoot = toHex(await state.manifest.root());
        return report;
      }
      report.generation = pending.generation;
      report.blocks = pending.dirty.popcount();
      const cut: Cut = {
        dirty: pending.dirty,
        pointInTime: true,
        read: (first, count) =>
          overlay.read(
            first * blockSize,
            Math.min(count * blockSize, overlay.sizeBytes - first * blockSize),
          ),
        release: () => Promise.resolve(),
      };
      const sent: SendReport = await sendGeneration(state, cut, link.destination, options.hooks);
      sent.sent.free();
      report.bytesSent += sent.bytesSent;
      report.alreadyStaged = sent.alreadyStaged;
      report.merkleRoot = sent.merkleRoot;
      return report;
    } catch (err) {
      const error = err instanceof PresyncError
        ? err
        : new PresyncError(ErrorCode.IO, String(err), { cause: err });
      if (!error.retryable) throw error;
      await link?.close().catch(() => {});
      link = null;
      await options.retry(error, report.attempts);
    } finally {
      await link?.close().catch(() => {});
    }
  }
}
