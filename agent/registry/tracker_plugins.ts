import { LIVE_DIRTY_FILE, WorkerNbdTracker } from "../../plugins/tracker-nbd/mod.ts";
import { QemuBitmapTracker } from "../../plugins/tracker-qemu-bitmap/mod.ts";
import { prepareWorkDir, QemuTracker, queryQemuDisk } from "../../plugins/tracker-qemu/mod.ts";
import { ScanTracker } from "../../plugins/tracker-scan/scan_tracker.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { FileSystem } from "../fs/file_system.ts";
import type { Logger } from "../log.ts";
import { type NbdAddress, NbdClient } from "../nbd/mod.ts";
import { parseQmpVolumeSpec, qemuWorkDir } from "../qemu/mod.ts";
import type { SourceState } from "../source/source_state.ts";
import type { Cut, Tracker } from "../tracker.ts";
import { type PluginEntry, PluginTable } from "./plugin_table.ts";

/** What the command line or configuration says to the trackers (each reads its own). */
export interface TrackerSettings {
  /** `nbd`: where presync serves the VM's disk (export name = volume name). */
  nbdListen?: NbdAddress;
  /** `qemu-bitmap`: the NBD server exporting the disk with its bitmap (`qemu-nbd --bitmap`). */
  nbdConnect?: NbdAddress;
  /** `qemu-bitmap`: the dirty bitmap to read (`qemu:dirty-bitmap:NAME`). */
  bitmap?: string;
}

/** What a tracker plugin gets to open one source volume's tracker. */
export interface TrackerOpenContext {
  fs: FileSystem;
  /** The volume's source state: identity, manifest, committed generation. */
  state: SourceState;
  /** The source image. */
  imagePath: string;
  /** The volume's own state directory; a tracker keeps its files there. */
  stateDir: string;
  /** Read-rate cap on the image while scanning, bytes/s (0 or absent: unlimited). */
  readRateBytesPerSecond?: number;
  /** The agent's secret for the scan's keyed pre-filter (absent: BLAKE3 for every block). */
  prefilterSecret?: Uint8Array;
  /** A background scan pass this long after each cut, failures to `onError`. */
  backgroundScan?: { intervalMs: number; onError: (err: PresyncError) => void };
  /** Errors of the tracker's own connections (an NBD client that fails), for the log. */
  onTrackerError?: (err: unknown) => void;
  /** Where a tracker logs how it attached (the qemu tracker: bitmap or scan, and why). */
  log?: Logger;
  settings: TrackerSettings;
}

/** What a tracker plugin gets to size a new volume. */
export interface NewVolumeContext {
  settings: TrackerSettings;
  /** The volume's name. */
  volume: string;
  /** The source image as configured (a file, or a `qmp:` disk). */
  imagePath: string;
}

/**
 * A tracker plugin as the registry lists it: its name, what it needs, and how to open it.
 * `check` runs before anything starts; `open` is called once per volume and the caller
 * closes the tracker.
 */
export interface TrackerPlugin extends PluginEntry {
  /**
   * Checks the settings for `volumes` volumes of one agent.
   *
   * @throws {PresyncError} `INVALID_ARGUMENT` naming the missing or conflicting flag
   */
  check(settings: TrackerSettings, volumes: number): void;
  /**
   * The size in bytes of a new volume named `volume`, when the tracker knows it better than
   * the image file's length (a qcow2 file is not its disk's size); absent: the file's length.
   */
  newVolumeSize?(context: NewVolumeContext): Promise<number>;
  /** Opens the tracker of one volume. */
  open(context: TrackerOpenContext): Promise<Tracker>;
}

function scanTracker(context: TrackerOpenContext, background: boolean): ScanTracker {
  const { state, stateDir } = context;
  return new ScanTracker({
    imagePath: context.imagePath,
    identity: state.identity,
    manifest: state.manifest,
    baselineGeneration: state.committedGeneration,
    checkpointPath: `${stateDir}/scan.checkpoint`,
    prefilter: context.prefilterSecret
      ? { tablePath: `${stateDir}/scan.prefilter`, secret: context.prefilterSecret }
      : undefined,
    background: background ? context.backgroundScan : undefined,
    inFlight: () => {
      const pending = state.pending;
      return pending ? { dirty: pending.dirty.clone(), acked: pending.acked.clone() } : null;
    },
    readRateBytesPerSecond: context.readRateBytesPerSecond,
    fs: context.fs,
  });
}

function oneVolume(name: string, flag: string, volumes: number, present: boolean): void {
  if (volumes !== 1 || !present) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--tracker ${name} serves one volume: give exactly one --volume and ${flag}`,
    );
  }
}

/** `scan`: re-reads the image each cut and compares it with the manifest. */
const SCAN: TrackerPlugin = {
  name: "scan",
  summary: "re-reads and hashes the image each cut; needs nothing from the hypervisor",
  check: () => {},
  open: (context) => Promise.resolve(scanTracker(context, true)),
};

/** `nbd`: presync is the NBD server of the VM's disk and sees every write. */
const NBD: TrackerPlugin = {
  name: "nbd",
  summary: "serves the image to the VM over NBD (--nbd-listen) and marks every write",
  check: (settings, volumes) =>
    oneVolume("nbd", "--nbd-listen ADDR (HOST:PORT or unix:PATH)", volumes, !!settings.nbdListen),
  async open(context) {
    // What changed while nobody tracked: after a clean stop the NBD tracker knows (it saved
    // its live set); otherwise one scan against the manifest tells, instead of a full send.
    let initialDirty: Cut | null = null;
    if (!(await context.fs.exists(`${context.stateDir}/${LIVE_DIRTY_FILE}`))) {
      initialDirty = await scanTracker(context, false).cut();
    }
    try {
      // On a thread of its own: the VM's writes never wait for the sender's CPU work.
      return await WorkerNbdTracker.create({
        imagePath: context.imagePath,
        identity: context.state.identity,
        stateDir: context.stateDir,
        listen: context.settings.nbdListen ? [context.settings.nbdListen] : [],
        initialDirty: initialDirty?.dirty,
        onError: context.onTrackerError ?? (() => {}),
      });
    } finally {
      await initialDirty?.release();
    }
  },
};

/** `qemu-bitmap`: reads QEMU's persistent dirty bitmap from a qemu-nbd export. */
const QEMU_BITMAP: TrackerPlugin = {
  name: "qemu-bitmap",
  summary: "reads QEMU's dirty bitmap (--bitmap NAME) from a qemu-nbd export (--nbd-connect)",
  check(settings, volumes) {
    oneVolume(
      "qemu-bitmap",
      "--nbd-connect ADDR (the qemu-nbd export, named after the volume) and --bitmap NAME",
      volumes,
      !!settings.nbdConnect && !!settings.bitmap,
    );
  },
  async newVolumeSize({ settings, volume }) {
    const client = await NbdClient.connect(settings.nbdConnect!, volume);
    try {
      return client.sizeBytes;
    } finally {
      await client.close();
    }
  },
  open: (context) =>
    Promise.resolve(
      new QemuBitmapTracker({
        address: context.settings.nbdConnect!,
        exportName: context.state.identity.name,
        bitmap: context.settings.bitmap!,
        identity: context.state.identity,
        // A new volume's replica is empty: its first generation copies the whole disk.
        fullFirstCut: context.state.committedGeneration === 0 && context.state.pending === null,
      }),
    ),
};

/**
 * `qemu`: the disk of a running QEMU (`--volume NAME=qmp:unix:SOCKET#NODE`), followed over
 * QMP: a dirty bitmap rotated per generation, point-in-time reads through QEMU's own NBD
 * server, and the VM paused through QMP for the final cut.
 */
const QEMU: TrackerPlugin = {
  name: "qemu",
  summary: "follows a running QEMU's disk over QMP (--volume NAME=qmp:unix:SOCKET#NODE): " +
    "dirty bitmaps, point-in-time reads, the VM paused to evacuate",
  check: () => {},
  async newVolumeSize({ imagePath }) {
    const spec = parseQmpVolumeSpec(imagePath);
    return (await queryQemuDisk(spec.qmpSocket, spec.node)).sizeBytes;
  },
  async open(context) {
    const spec = parseQmpVolumeSpec(context.imagePath);
    const { state } = context;
    const workDir = qemuWorkDir(spec, state.identity.name);
    await prepareWorkDir(workDir);
    return await QemuTracker.open({
      qmpSocket: spec.qmpSocket,
      node: spec.node,
      identity: state.identity,
      manifest: state.manifest,
      recordedGeneration: state.pending?.generation ?? state.committedGeneration,
      stateDir: context.stateDir,
      workDir,
      fs: context.fs,
      log: context.log,
    });
  },
};

/**
 * Every tracker this build has, by `--tracker` name; the first is the default. A new
 * tracker is a folder `plugins/tracker-<name>/` and one entry here.
 */
export const TRACKERS: PluginTable<TrackerPlugin> = new PluginTable("tracker", "--tracker", [
  SCAN,
  NBD,
  QEMU_BITMAP,
  QEMU,
]);

/** The tracker used when configuration names none. */
export const DEFAULT_TRACKER = "scan";
