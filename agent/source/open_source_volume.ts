import { WorkerNbdTracker } from "../../plugins/tracker-nbd/mod.ts";
import { QemuTracker, queryQemuDisk } from "../../plugins/tracker-qemu/mod.ts";
import { ScanTracker } from "../../plugins/tracker-scan/scan_tracker.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import type { Logger } from "../log.ts";
import type { NbdAddress } from "../nbd/mod.ts";
import {
  isQmpVolumeSpec,
  parseQmpVolumeSpec,
  qemuWorkDir,
  type QmpVolumeSpec,
  type VmControl,
} from "../qemu/mod.ts";
import type { Cut, Tracker } from "../tracker.ts";
import {
  newVolumeIdentity,
  validateBlockSize,
  validateVolumeName,
} from "../volume/volume_identity.ts";
import { SourceState } from "./source_state.ts";

/** The trackers a source volume can use. */
export type TrackerKind = "scan" | "nbd" | "qemu";

/** Options of {@linkcode openSourceVolume}. */
export interface SourceVolumeOptions {
  fs: FileSystem;
  /** Volume name (validated). */
  name: string;
  /**
   * The source image; or, with the qemu tracker, the disk of a running QEMU as
   * `qmp:unix:PATH#NODE` (which selects that tracker by itself).
   */
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
  /** With the qemu tracker: where it logs how it attached (bitmap or scan, and why). */
  log?: Logger;
}

/** A source volume ready to cut: its state and its tracker. */
export interface SourceVolume {
  state: SourceState;
  tracker: Tracker;
  /** The VM's run state, where the tracker reaches the hypervisor (the qemu tracker). */
  vm?: VmControl;
}

/**
 * Opens one source volume, as the agent and local sync both start it: its state (a new
 * volume gets an identity from the image's size and a fresh UUID) and its tracker. The
 * caller closes both.
 *
 * A QEMU disk (`qmp:unix:PATH#NODE`) gets its size from QEMU, and the VM control with it.
 *
 * @throws {PresyncError} `INVALID_VOLUME_NAME`, `INVALID_ARGUMENT` (block size, a malformed
 *   `qmp:` spec or one given with another tracker), `IO` (the image cannot be opened),
 *   `CONNECTION_LOST` (QEMU's QMP socket does not answer), `STORE_CORRUPT` (damaged state),
 *   or the tracker's error
 */
export async function openSourceVolume(options: SourceVolumeOptions): Promise<SourceVolume> {
  const { fs, stateDir } = options;
  const name = validateVolumeName(options.name);
  const blockSize = validateBlockSize(options.blockSize);
  const qemu = qemuSpecOf(options);
  let state: SourceState;
  if (await fs.exists(`${stateDir}/state.json`)) {
    state = await SourceState.open(fs, stateDir);
  } else {
    const size = qemu
      ? (await queryQemuDisk(qemu.qmpSocket, qemu.node)).sizeBytes
      : await imageSize(fs, options.imagePath);
    state = await SourceState.init(fs, stateDir, newVolumeIdentity(name, size, blockSize));
  }
  try {
    if (qemu) return await openQemuVolume(state, qemu, options);
    return { state, tracker: await openTracker(state, options) };
  } catch (err) {
    state.close();
    throw err;
  }
}

async function imageSize(fs: FileSystem, path: string): Promise<number> {
  const image = await io(`open source image ${path}`, () => fs.open(path));
  try {
    return await image.size();
  } finally {
    image.close();
  }
}

/** The QEMU disk a volume is, when it is one (`qmp:` image, or `--tracker qemu`). */
function qemuSpecOf(options: SourceVolumeOptions): QmpVolumeSpec | null {
  const qmp = isQmpVolumeSpec(options.imagePath);
  if (!qmp && options.tracker !== "qemu") return null;
  if (qmp && options.tracker !== undefined && options.tracker !== "qemu") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `volume ${options.name} is a QEMU disk (${options.imagePath}), which only the qemu ` +
        `tracker follows: drop --tracker ${options.tracker} or give an image file`,
    );
  }
  return parseQmpVolumeSpec(options.imagePath);
}

/** The qemu tracker on the VM's QMP socket, and VM control over the same connection. */
async function openQemuVolume(
  state: SourceState,
  spec: QmpVolumeSpec,
  options: SourceVolumeOptions,
): Promise<SourceVolume> {
  const workDir = qemuWorkDir(spec, state.identity.name);
  await prepareWorkDir(workDir);
  const tracker = await QemuTracker.open({
    qmpSocket: spec.qmpSocket,
    node: spec.node,
    identity: state.identity,
    manifest: state.manifest,
    recordedGeneration: state.pending?.generation ?? state.committedGeneration,
    stateDir: options.stateDir,
    workDir,
    fs: options.fs,
    log: options.log,
  });
  return { state, tracker, vm: tracker.vm };
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

/**
 * Makes the directory QEMU and the agent share, beside the QMP socket (whose directory QEMU's
 * group may write): a real directory, never a symlink someone planted there.
 */
async function prepareWorkDir(dir: string): Promise<void> {
  await io(`create ${dir}`, async () => {
    try {
      await Deno.mkdir(dir);
      // QEMU writes its overlays and NBD socket here: its group (the directory's, as a
      // setgid parent gives it) must reach it whatever the agent's umask.
      await Deno.chmod(dir, 0o770);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
  });
  const info = await io(`inspect ${dir}`, () => Deno.lstat(dir));
  if (!info.isDirectory) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${dir} must be a directory that QEMU and presync share, but it is a ` +
        `${info.isSymlink ? "symbolic link" : "file"}: remove it, and presync makes the directory`,
    );
  }
}
