import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import type { Logger } from "../log.ts";
import { isQmpVolumeSpec, type VmControl } from "../qemu/mod.ts";
import { DEFAULT_TRACKER, TRACKERS, type TrackerSettings } from "../registry/mod.ts";
import type { Tracker } from "../tracker.ts";
import {
  newVolumeIdentity,
  validateBlockSize,
  validateVolumeName,
} from "../volume/volume_identity.ts";
import { SourceState } from "./source_state.ts";

/** Options of {@linkcode openSourceVolume}. */
export interface SourceVolumeOptions {
  fs: FileSystem;
  /** Volume name (validated). */
  name: string;
  /**
   * The source image; or the disk of a running QEMU as `qmp:unix:PATH#NODE`, which selects
   * the `qemu` tracker by itself.
   */
  imagePath: string;
  /** The volume's own state directory (created for a new volume). */
  stateDir: string;
  /** Block size of a new volume (ignored once the volume exists). */
  blockSize: number;
  /** Read-rate cap on the image while scanning, bytes/s (0: unlimited). */
  readRateBytesPerSecond?: number;
  /**
   * How writes are found: a tracker of the registry (`agent/registry/`; default `qemu` for
   * a `qmp:` volume, `scan` for an image file).
   */
  tracker?: string;
  /** What the tracker needs (`--nbd-listen`, `--nbd-connect`, `--bitmap`). */
  trackerSettings?: TrackerSettings;
  /** Called when one of the tracker's connections fails (an NBD client). */
  onTrackerError?: (err: unknown) => void;
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
  /** Where a tracker logs how it attached (the qemu tracker: bitmap or scan, and why). */
  log?: Logger;
}

/** A source volume ready to cut: its state and its tracker. */
export interface SourceVolume {
  state: SourceState;
  tracker: Tracker;
  /** The VM's run state, where the tracker reaches the hypervisor (the qemu tracker). */
  vm?: VmControl;
}

/** The tracker a volume uses: the one named, else `qemu` for a QEMU disk, else the default. */
export function trackerNameOf(options: Pick<SourceVolumeOptions, "tracker" | "imagePath">): string {
  return options.tracker ?? (isQmpVolumeSpec(options.imagePath) ? "qemu" : DEFAULT_TRACKER);
}

/**
 * Opens one source volume, as the agent and local sync both start it: its state (a new
 * volume gets an identity from the image's size and a fresh UUID) and its tracker. The
 * caller closes both.
 *
 * @throws {PresyncError} `INVALID_VOLUME_NAME`, `INVALID_ARGUMENT` (block size, a malformed
 *   `qmp:` spec or one given with another tracker), `PLUGIN_UNKNOWN` (no such tracker), `IO`
 *   (the image cannot be opened), `CONNECTION_LOST` (QEMU's QMP socket does not answer),
 *   `STORE_CORRUPT` (damaged state), or the tracker's error
 */
export async function openSourceVolume(options: SourceVolumeOptions): Promise<SourceVolume> {
  const { fs, stateDir } = options;
  const name = validateVolumeName(options.name);
  const trackerName = trackerNameOf(options);
  const tracker = TRACKERS.get(trackerName);
  if (isQmpVolumeSpec(options.imagePath) && trackerName !== "qemu") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `volume ${name} is a QEMU disk (${options.imagePath}), which only the qemu tracker ` +
        `follows: drop --tracker ${trackerName} or give an image file`,
    );
  }
  const blockSize = validateBlockSize(options.blockSize);
  const settings = options.trackerSettings ?? {};
  let state: SourceState;
  if (await fs.exists(`${stateDir}/state.json`)) {
    state = await SourceState.open(fs, stateDir);
  } else {
    const size = tracker.newVolumeSize
      ? await tracker.newVolumeSize({ settings, volume: name, imagePath: options.imagePath })
      : await imageSize(fs, options.imagePath);
    state = await SourceState.init(fs, stateDir, newVolumeIdentity(name, size, blockSize));
  }
  try {
    const opened = await tracker.open({
      fs,
      state,
      imagePath: options.imagePath,
      stateDir,
      readRateBytesPerSecond: options.readRateBytesPerSecond,
      prefilterSecret: options.prefilterSecret,
      backgroundScan: options.backgroundScan,
      onTrackerError: options.onTrackerError,
      log: options.log,
      settings,
    });
    return { state, tracker: opened, vm: opened.vm };
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
