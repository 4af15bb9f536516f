import { Bitmap } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import type { FileSystem } from "../../agent/fs/file_system.ts";
import type { Logger } from "../../agent/log.ts";
import type { NbdClient } from "../../agent/nbd/mod.ts";
import {
  DEFAULT_QMP_TIMEOUT_MS,
  QmpClient,
  QmpVmControl,
  type VmControl,
} from "../../agent/qemu/mod.ts";
import type { Cut, Tracker } from "../../agent/tracker.ts";
import type { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { blockCount, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { markDirtyExtents } from "../tracker-qemu-bitmap/mod.ts";
import { findNode, type NodeInfo } from "./_block_graph.ts";
import { Fleece, removeLeftovers } from "./_fleece.ts";
import { TrackerNames } from "./_names.ts";
import { NbdExports } from "./_nbd_exports.ts";
import { scanAgainstManifest } from "./_nbd_scan.ts";
import { planRecovery, type TransactionAction } from "./_recovery_plan.ts";
import { loadScanState, removeScanState, saveScanState, SCAN_STATE_FILE } from "./_scan_state.ts";
import { QemuCut } from "./qemu_cut.ts";

/** Options of {@linkcode QemuTracker.open}. */
export interface QemuTrackerOptions {
  /** The VM's QMP socket (`-qmp unix:PATH,server=on,wait=off`). */
  qmpSocket: string;
  /** The disk's block node (`node-name`, e.g. libvirt's `libvirt-1-format`) or drive id. */
  node: string;
  identity: VolumeIdentity;
  /** Block hashes the destination has or will have: the baseline of a fallback scan. */
  manifest: ManifestFile;
  /**
   * The last generation the agent has durably recorded: its pending generation if it has
   * one, else its committed one. Decides which bitmaps left by an earlier run are already
   * in the agent's hands (see {@linkcode planRecovery}).
   */
  recordedGeneration: number;
  /** presync's own directory for this volume (the scan state file). */
  stateDir: string;
  /**
   * A directory both QEMU and presync can use: QEMU creates the fleecing overlays there and
   * its NBD server listens on `nbd.sock` in it; presync reads that socket and removes
   * leftover overlays. Short path: Unix socket paths are limited to 107 bytes.
   */
  workDir: string;
  /** Time QEMU has for one command or job, in ms (default 10 s). */
  timeoutMs?: number;
  fs?: FileSystem;
  log?: Logger;
}

/** How the tracker resumed when it attached to the VM (last attach). */
export interface TrackerRecovery {
  /** `bitmap`: QEMU's bitmaps knew every write; `scan`: the disk was compared with the manifest. */
  method: "bitmap" | "scan";
  reason: string;
  /** Bitmaps of cuts never recorded, folded into the next generation. */
  merged: string[];
  /** Bitmaps removed (recorded generations, inconsistent leftovers). */
  removed: string[];
  /** Blocks a scan found changed (0 without a scan), sent with the next generation. */
  scannedDirtyBlocks: number;
}

/**
 * The tracker of a running QEMU, with no presync in the VM's I/O path: QEMU records the
 * guest's writes in a dirty bitmap on the disk's node (persistent in a qcow2 image), and
 * each `cut()` rotates bitmaps and starts a fleecing view in ONE QMP `transaction`, so no
 * write falls between two generations and the generation is read as the disk was at the
 * cut while the VM runs on. See this plugin's `mod.ts` for the setup and crash recovery.
 *
 * @example
 * ```ts ignore
 * const state = await SourceState.open(fs, "/var/lib/presync/agent/db1");
 * const tracker = await QemuTracker.open({
 *   qmpSocket: "/run/presync-qemu/db1.qmp",
 *   node: "libvirt-1-format",
 *   identity: state.identity,
 *   manifest: state.manifest,
 *   recordedGeneration: state.pending?.generation ?? state.committedGeneration,
 *   stateDir: "/var/lib/presync/agent/db1",
 *   workDir: "/run/presync-qemu/presync-db1",
 * });
 * const cut = await tracker.cut(); // cut.pointInTime === true
 * ```
 */
export class QemuTracker implements Tracker {
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly #options: QemuTrackerOptions;
  readonly #names: TrackerNames;
  readonly #fs: FileSystem;
  readonly #timeoutMs: number;
  readonly #scanStatePath: string;
  readonly #socket: string;
  #qmp: QmpClient | null = null;
  /** Exports on the QEMU of `#qmp`. */
  #exports!: NbdExports;
  #node!: NodeInfo;
  #next: number;
  #carry: { generation: number; dirty: Bitmap } | null = null;
  #recovery!: TrackerRecovery;
  #attachNeeded = true;
  #outstanding: QemuCut | null = null;
  #closed = false;
  /**
   * The VM's run state, on the tracker's own QMP connection (a monitor serves one client):
   * what an evacuation pauses before its final cut. Closed with the tracker.
   */
  readonly vm: VmControl = QmpVmControl.over(() => this.#vmConnection());

  private constructor(options: QemuTrackerOptions) {
    this.#options = options;
    this.#names = new TrackerNames(options.identity.name);
    this.#fs = options.fs ?? new DenoFileSystem();
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
    this.#scanStatePath = `${options.stateDir}/${SCAN_STATE_FILE}`;
    this.#socket = `${options.workDir}/nbd.sock`;
    this.sizeBytes = options.identity.sizeBytes;
    this.blockSize = options.identity.blockSize;
    this.#next = options.recordedGeneration + 1;
  }

  /** Attaches to the VM: cleans up after an earlier run, resumes from its bitmaps or scans. */
  static async open(options: QemuTrackerOptions): Promise<QemuTracker> {
    const tracker = new QemuTracker(options);
    try {
      await tracker.#attach();
    } catch (err) {
      await tracker.close();
      throw err;
    }
    return tracker;
  }

  /** How the last attach resumed (bitmap or scan, and why). */
  get recovery(): TrackerRecovery {
    return this.#recovery;
  }

  /** The tracked node's name. */
  get nodeName(): string {
    return this.#node.nodeName;
  }

  /** The generation the next `cut()` is. */
  get nextGeneration(): number {
    return this.#next;
  }

  async #connect(): Promise<QmpClient> {
    if (this.#qmp && !this.#qmp.isClosed) return this.#qmp;
    this.#attachNeeded = true;
    try {
      this.#qmp = await QmpClient.connect(this.#options.qmpSocket, { timeoutMs: this.#timeoutMs });
      this.#exports = new NbdExports(this.#qmp, this.#socket, this.sizeBytes, this.#timeoutMs);
    } catch (err) {
      if (err instanceof PresyncError && err.code !== ErrorCode.IO) throw err;
      throw new PresyncError(
        ErrorCode.CONNECTION_LOST,
        `cannot reach the VM's QMP socket ${this.#options.qmpSocket} (VM shut down or ` +
          `restarting?); presync attaches again once QEMU is back`,
        { cause: err, retryable: true },
      );
    }
    return this.#qmp;
  }

  async #vmConnection(): Promise<QmpClient> {
    if (this.#closed) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "VM control after the tracker was closed");
    }
    return await this.#connect();
  }

  /** (Re)attaches after start, a QEMU restart, or a lost bitmap; see {@linkcode planRecovery}. */
  async #attach(): Promise<void> {
    const qmp = await this.#connect();
    const { identity, workDir } = this.#options;
    const recorded = this.#next - 1;
    this.#node = await findNode(qmp, this.#options.node);
    if (this.#node.sizeBytes !== identity.sizeBytes) {
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `QEMU's node ${this.#node.nodeName} is ${this.#node.sizeBytes} bytes but volume ` +
          `\`${identity.name}\` is ${identity.sizeBytes}; a resized volume needs a new init`,
      );
    }
    await removeLeftovers(qmp, this.#names, workDir, this.#timeoutMs);
    this.#node = await findNode(qmp, this.#node.nodeName);
    const blocks = blockCount(identity);
    let state = await loadScanState(this.#fs, this.#scanStatePath, blocks, recorded + 1);
    if (state && state.generation <= recorded) {
      state.dirty?.free();
      state = null;
      await removeScanState(this.#fs, this.#scanStatePath);
    }
    const persistent = this.#node.driver === "qcow2";
    const plan = planRecovery(
      this.#names,
      this.#node.nodeName,
      this.#node.bitmaps,
      recorded,
      persistent,
    );
    const interrupted = state !== null && !state.complete;
    this.#setCarry(null);
    let scanned = 0;
    await this.#transaction(plan.cleanup);
    if (plan.scan || interrupted) {
      state?.dirty?.free();
      // Saved before the new bitmap exists: dying in the scan below means scanning again.
      await saveScanState(this.#fs, this.#scanStatePath, {
        generation: recorded + 1,
        complete: false,
        dirty: null,
      });
      await this.#transaction(plan.actions);
      const dirty = await this.#scan();
      await saveScanState(this.#fs, this.#scanStatePath, {
        generation: recorded + 1,
        complete: true,
        dirty,
      });
      scanned = dirty.popcount();
      this.#setCarry({ generation: recorded + 1, dirty });
    } else {
      await this.#transaction(plan.actions);
      if (state?.dirty) this.#setCarry({ generation: state.generation, dirty: state.dirty });
    }
    this.#recovery = {
      method: plan.scan || interrupted ? "scan" : "bitmap",
      reason: interrupted && !plan.scan ? "an earlier scan was interrupted" : plan.reason,
      merged: plan.merged,
      removed: plan.removed,
      scannedDirtyBlocks: scanned,
    };
    this.#attachNeeded = false;
    this.#options.log?.("info", "qemu_tracker_attached", {
      volume: identity.name,
      node: this.#node.nodeName,
      driver: this.#node.driver,
      nextGeneration: this.#next,
      ...this.#recovery,
    });
  }

  #setCarry(carry: { generation: number; dirty: Bitmap } | null): void {
    this.#carry?.dirty.free();
    this.#carry = carry;
  }

  async #transaction(actions: TransactionAction[]): Promise<void> {
    if (actions.length > 0) await this.#qmp!.execute("transaction", { actions });
  }

  /** Compares the live disk with the manifest through a read-only export. */
  async #scan(): Promise<Bitmap> {
    const client = await this.#exportLive();
    try {
      return await scanAgainstManifest(client, this.#options.manifest, this.#options.identity);
    } finally {
      await client.close();
      await this.#exports.remove(this.#names.export("live"));
    }
  }

  /** A read-only export of the live disk and a client on it. */
  async #exportLive(): Promise<NbdClient> {
    const id = this.#names.export("live");
    await this.#exports.add(id, this.#node.nodeName);
    return await this.#exports.connect(id);
  }

  #checkIdle(what: string): void {
    if (this.#closed) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, `${what} after the tracker was closed`);
    }
    if (this.#outstanding && !this.#outstanding.released) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `${what} while the previous cut is not released; release each cut before the next`,
      );
    }
  }

  async #ready(): Promise<QmpClient> {
    const qmp = await this.#connect();
    if (this.#attachNeeded) await this.#attach();
    return qmp;
  }

  /**
   * Generation `nextGeneration`: in one QMP transaction, starts the next bitmap, freezes
   * this one and starts copy-before-write into a fresh overlay; then exports the overlay
   * with the frozen bitmap and reads the dirty set from it. `QEMU_BITMAP_LOST` (retryable)
   * when someone removed the bitmap: the next call scans.
   */
  /** Unknown without asking QEMU (a QMP round trip): status estimates the writes from the write rate. */
  changesNow(): null {
    return null;
  }

  async cut(): Promise<Cut> {
    this.#checkIdle("cut()");
    const qmp = await this.#ready();
    const g = this.#next;
    const node = this.#node.nodeName;
    const frozen = this.#names.bitmap(g);
    const fleece = await Fleece.prepare(
      qmp,
      this.#names,
      g,
      node,
      this.sizeBytes,
      this.#options.workDir,
      this.#timeoutMs,
    );
    try {
      await this.#transaction([
        {
          type: "block-dirty-bitmap-add",
          data: {
            node,
            name: this.#names.bitmap(g + 1),
            persistent: this.#node.driver === "qcow2",
          },
        },
        { type: "block-dirty-bitmap-disable", data: { node, name: frozen } },
        fleece.backupAction(node),
      ]);
    } catch (err) {
      await fleece.teardown(this.#timeoutMs);
      throw await this.#explainFailedRotation(err, frozen);
    }
    try {
      await this.#exports.add(this.#names.export(g), fleece.node, [frozen]);
      const context = `qemu:dirty-bitmap:${frozen}`;
      const client = await this.#exports.connect(this.#names.export(g), [context]);
      const dirty = new Bitmap(blockCount(this.#options.identity));
      try {
        for (let at = 0; at < this.sizeBytes;) {
          const length = Math.min(this.sizeBytes - at, 2 ** 31);
          const extents = await client.blockStatus(at, length, context);
          at = markDirtyExtents(dirty, at, extents, this.blockSize, this.sizeBytes);
        }
      } catch (err) {
        dirty.free();
        await client.close();
        throw err;
      }
      const carried = this.#carry;
      if (carried) dirty.or(carried.dirty);
      this.#carry = null;
      carried?.dirty.free();
      this.#next = g + 1;
      const cut = new QemuCut(dirty, true, client, this.#options.identity, async () => {
        await this.#releaseGeneration(g, fleece);
        if (carried) await removeScanState(this.#fs, this.#scanStatePath);
      });
      this.#outstanding = cut;
      return cut;
    } catch (err) {
      await this.#rollBack(g, fleece);
      throw err;
    }
  }

  /** Why a rotation failed: the bitmap is gone (`QEMU_BITMAP_LOST`), or QEMU's own error. */
  async #explainFailedRotation(err: unknown, frozen: string): Promise<unknown> {
    if (!(err instanceof PresyncError) || err.code !== ErrorCode.QMP_COMMAND_FAILED) return err;
    const node = await findNode(this.#qmp!, this.#node.nodeName);
    const bitmap = node.bitmaps.find((b) => b.name === frozen);
    if (bitmap && bitmap.recording && !bitmap.inconsistent) return err;
    this.#attachNeeded = true;
    return new PresyncError(
      ErrorCode.QEMU_BITMAP_LOST,
      `dirty bitmap ${frozen} on QEMU node ${node.nodeName} was ${
        bitmap ? "disabled or made unusable" : "removed"
      } by someone else, so the writes since generation ${this.#next - 1} are unknown; ` +
        `presync compares the disk with its manifest on the next cut (no block is missed). ` +
        `Leave bitmaps named ${this.#names.prefix}* alone`,
      { cause: err, retryable: true },
    );
  }

  /** Undoes a rotation whose export failed: the frozen bitmap takes the new one back. */
  async #rollBack(g: number, fleece: Fleece): Promise<void> {
    try {
      await fleece.teardown(this.#timeoutMs);
      const node = this.#node.nodeName;
      await this.#transaction([
        {
          type: "block-dirty-bitmap-merge",
          data: { node, target: this.#names.bitmap(g), bitmaps: [this.#names.bitmap(g + 1)] },
        },
        { type: "block-dirty-bitmap-enable", data: { node, name: this.#names.bitmap(g) } },
        { type: "block-dirty-bitmap-remove", data: { node, name: this.#names.bitmap(g + 1) } },
      ]);
      await this.#exports.stopServerIfIdle();
    } catch {
      // QEMU is gone or refuses: the next attach folds the unrecorded bitmap in.
      this.#attachNeeded = true;
    }
  }

  /** After generation `g` is in the agent's hands: drops its overlay and frozen bitmap. */
  async #releaseGeneration(g: number, fleece: Fleece): Promise<void> {
    await this.#whileQemuLives(async (qmp) => {
      await fleece.teardown(this.#timeoutMs);
      const name = this.#names.bitmap(g);
      const node = await findNode(qmp, this.#node.nodeName);
      if (node.bitmaps.some((b) => b.name === name)) {
        await qmp.execute("block-dirty-bitmap-remove", { node: node.nodeName, name });
      }
      await this.#exports.stopServerIfIdle();
    });
  }

  /**
   * Runs a clean-up in QEMU, unless QEMU went away (before or during it): then nothing of
   * what it would drop is left, and the next attach cleans up whatever an image kept.
   */
  async #whileQemuLives(cleanUp: (qmp: QmpClient) => Promise<void>): Promise<void> {
    const qmp = this.#qmp;
    if (!qmp || qmp.isClosed) return;
    try {
      await cleanUp(qmp);
    } catch (err) {
      if (!(err instanceof PresyncError) || err.code !== ErrorCode.CONNECTION_LOST) throw err;
      this.#attachNeeded = true;
    }
  }

  /**
   * A cut over `dirty` (the agent's pending generation after a restart), reading the live
   * disk through a read-only export: not point-in-time, as the contract says.
   */
  async resume(dirty: Bitmap): Promise<Cut> {
    this.#checkIdle("resume()");
    await this.#ready();
    const client = await this.#exportLive();
    const cut = new QemuCut(
      dirty.clone(),
      false,
      client,
      this.#options.identity,
      () => this.#whileQemuLives(() => this.#exports.remove(this.#names.export("live"))),
    );
    this.#outstanding = cut;
    return cut;
  }

  /**
   * Detaches: ends exports and overlays but keeps every bitmap, so that the next start
   * resumes from them (an unreleased cut's frozen bitmap is decided on by the next attach).
   * Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const qmp = this.#qmp;
    this.#setCarry(null);
    if (qmp && !qmp.isClosed && !this.#attachNeeded) {
      try {
        await removeLeftovers(qmp, this.#names, this.#options.workDir, this.#timeoutMs);
        await this.#exports.stopServerIfIdle();
      } finally {
        await qmp.close();
      }
    } else await qmp?.close();
  }
}
