import { WorkerNbdTracker } from "../../plugins/tracker-nbd/mod.ts";
import { ScanTracker } from "../../plugins/tracker-scan/scan_tracker.ts";
import type { PresyncError } from "../errors.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import type { NbdAddress } from "../nbd/mod.ts";
import type { Cut, Tracker } from "../tracker.ts";
import {
  newVolumeIdentity,
  validateBlockSize,
  validateVolumeName,
} from "../volume/volume_identity.ts";
import { SourceState } from "./source_state.ts";

/** The trackers a source volume can use. */
export type TrackerKind = "scan" | "nbd";

/** Options of {@linkcode openSourceVolume}. */
export interface SourceVolumeOptions {
  fs: FileSystem;
  /** Volume name (validated). */
  name: string;
  /** The source image. */
  imagePath: string;
  /** The volume's own state directory (created for a new volume). */
  stateDir: string;
  /** Block size of a new volume (ignored once the volume exists). */
  blockSize: number;
  /** Read-rate cap on the image while scanning, bytes/s (0: unlimited). */
  readRateBytesPerSecond?: number;
  /** How writes are found (default `scan`). */
  tracker?: TrackerKind;
  /** With the nbd tracker: where the VM's disk is served (export name = volume name). */
  nbdListen?: NbdAddress;
  /** With the nbd tracker: called when an NBD client connection fails. */
  onNbdError?: (err: unknown) => void;
  /**
   * The agent's secret for the scan's keyed pre-filter (see `plugins/tracker-scan`): with it,
   * a scan pays BLAKE3 only for blocks whose pre-filter value changed; without it, every block.
   */
  prefilterSecret?: Uint8Array;
  /**
   * With the scan tracker: a background pass this long after each cut or pass, so the table
   * is fresh when an evacuation's cut comes; failed passes go to `onError`.
   */
  backgroundScan?: { intervalMs: number; onError: (err: PresyncError) => void };
}

/** A source volume ready to cut: its state and its tracker. */
export interface SourceVolume {
  state: SourceState;
  tracker: Tracker;
}

/**
 * Opens one source volume, as the agent and local sync both start it: its state (a new
 * volume gets an identity from the image's size and a fresh UUID) and its tracker. The
 * caller closes both.
 *
 * @throws {PresyncError} `INVALID_VOLUME_NAME`, `INVALID_ARGUMENT` (block size), `IO` (the
 *   image cannot be opened), `STORE_CORRUPT` (damaged state), or the tracker's error
 */
export async function openSourceVolume(options: SourceVolumeOptions): Promise<SourceVolume> {
  const { fs, stateDir } = options;
  const name = validateVolumeName(options.name);
  const blockSize = validateBlockSize(options.blockSize);
  let state: SourceState;
  if (await fs.exists(`${stateDir}/state.json`)) {
    state = await SourceState.open(fs, stateDir);
  } else {
    const image = await io(
      `open source image ${options.imagePath}`,
      () => fs.open(options.imagePath),
    );
    let size: number;
    try {
      size = await image.size();
    } finally {
      image.close();
    }
    state = await SourceState.init(fs, stateDir, newVolumeIdentity(name, size, blockSize));
  }
  try {
    return { state, tracker: await openTracker(state, options) };
  } catch (err) {
    state.close();
    throw err;
  }
}

async function openTracker(state: SourceState, options: SourceVolumeOptions): Promise<Tracker> {
  const scan = new ScanTracker({
    imagePath: options.imagePath,
    identity: state.identity,
    manifest: state.manifest,
    baselineGeneration: state.committedGeneration,
    checkpointPath: `${options.stateDir}/scan.checkpoint`,
    prefilter: options.prefilterSecret
      ? { tablePath: `${options.stateDir}/scan.prefilter`, secret: options.prefilterSecret }
      : undefined,
    background: options.tracker === "nbd" ? undefined : options.backgroundScan,
    readRateBytesPerSecond: options.readRateBytesPerSecond,
    fs: options.fs,
  });
  if (options.tracker !== "nbd") return scan;
  // What changed while nobody tracked: after a clean stop the NBD tracker knows (it saved
  // its live set); otherwise one scan against the manifest tells, instead of a full send.
  let initialDirty: Cut | null = null;
  if (!(await options.fs.exists(`${options.stateDir}/nbd-live.dirty`))) {
    initialDirty = await scan.cut();
  }
  try {
    // On a thread of its own: the VM's writes never wait for the sender's CPU work.
    return await WorkerNbdTracker.create({
      imagePath: options.imagePath,
      identity: state.identity,
      stateDir: options.stateDir,
      listen: options.nbdListen ? [options.nbdListen] : [],
      initialDirty: initialDirty?.dirty,
      onError: options.onNbdError ?? (() => {}),
    });
  } finally {
    await initialDirty?.release();
  }
}
