import { Bitmap, PrefilterKey } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import type { FileHandle, FileSystem } from "../../agent/fs/file_system.ts";
import { io, toIoError } from "../../agent/fs/io_error.ts";
import { RateLimiter } from "../../agent/rate_limiter.ts";
import type { Cut, TrackedChanges, Tracker } from "../../agent/tracker.ts";
import type { ManifestFile } from "../../agent/volume/manifest_file.ts";
import { blockCount, reseedHint, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { loadCheckpoint, saveCheckpoint } from "./_scan_checkpoint.ts";
import { SCAN_READ_BYTES, scanPass } from "./_scan_pass.ts";
import { PrefilterTable } from "./prefilter_table.ts";
import { ScanWorkers } from "./_scan_workers.ts";

export { SCAN_READ_BYTES };

/** Images at least this large are scanned on every core (workers cost 0.2–0.4 s to start). */
export const PARALLEL_SCAN_MIN_BYTES = 256 * 1024 * 1024;

/** Options of {@linkcode ScanTracker}. */
export interface ScanTrackerOptions {
  /** The source image file. */
  imagePath: string;
  identity: VolumeIdentity;
  /** The baseline: block hashes the destination has (or will have). Not closed here. */
  manifest: ManifestFile;
  /**
   * Which baseline `manifest` is (the committed generation it reflects). A saved scan
   * checkpoint is used only for the same baseline.
   */
  baselineGeneration: number;
  /** Where scan progress is saved so a killed scan resumes; none when absent. */
  checkpointPath?: string;
  /** Save progress after this many bytes scanned. Default 1 GiB. */
  checkpointEveryBytes?: number;
  /**
   * Scan workers: threads that each open the image and read, zero-check, pre-filter and hash
   * every n-th piece of it, this thread only settling their verdicts. Default: one per core,
   * at least 2, for images of PARALLEL_SCAN_MIN_BYTES or more; 1: everything on this thread.
   * Workers read the real file at `imagePath`, so with an `fs` other than
   * {@linkcode DenoFileSystem} a scan always runs on this thread. They start with the first
   * pass and stop at `close()`.
   */
  workers?: number;
  /** Read-rate cap on the image, bytes per second; 0 or absent: unlimited. */
  readRateBytesPerSecond?: number;
  /**
   * The pre-filter: a table of per-block pre-filter values in the volume's state directory
   * (`tablePath`, created when missing) and the agent's 32-byte secret
   * (`loadPrefilterSecret`). A block whose value under the secret is the one in the table
   * is not hashed. Absent: every non-zero block is hashed with BLAKE3 on every scan.
   */
  prefilter?: { tablePath: string; secret: Uint8Array };
  /**
   * Background passes: `intervalMs` after each cut or pass ends, one more pass refreshes the
   * pre-filter table (within the read-rate cap), so that the next cut hashes only what was
   * written since. A failed pass is reported to `onError`; the next is scheduled as usual.
   */
  background?: { intervalMs: number; onError: (err: PresyncError) => void };
  /**
   * The generation in flight: its blocks and those the destination acknowledged (copies the
   * tracker frees; null: none in flight), asked at the start of each background pass. A pass
   * finds the unacknowledged ones changed (their manifest entries are updated as they are
   * sent), so they are left out of {@linkcode ScanTracker.changesNow}, which is what changed
   * besides them; the generation also splits the rate of new changes in two (outside it, and
   * rewrites of its sent blocks).
   */
  inFlight?: () => { dirty: Bitmap; acked: Bitmap } | null;
  fs?: FileSystem;
}

/** Bytes in a GiB, the unit of a scan's measured speed. */
const GIB = 2 ** 30;
/** Weight of the newest pass in the smoothed scan speed. */
const SPEED_SMOOTHING = 0.5;

/** What the last scan pass cost, for predicting the next one. */
export interface ScanCost {
  /** A cut's pass, or a background pass between cuts. */
  kind: "cut" | "background";
  /** Wall-clock seconds of the pass, read-rate waits included. */
  seconds: number;
  /** Seconds spent waiting for the read-rate cap. */
  throttledSeconds: number;
  /** Image bytes read. */
  bytesRead: number;
  /** Image bytes in holes (`SEEK_HOLE`), taken as zeros without being read. */
  holeBytes: number;
  /** Blocks and bytes hashed with BLAKE3 (the rest was vouched for by the pre-filter). */
  blocksHashed: number;
  bytesHashed: number;
  /** Blocks found to differ from the baseline manifest. */
  dirtyBlocks: number;
  /** When the pass started (ms since the epoch): every block written before is found. */
  startedAtMs: number;
  /** Whether a trusted pre-filter table was used (false: every non-zero block was hashed). */
  prefiltered: boolean;
  /** When the pass ended (ms since the epoch). */
  endedAtMs: number;
}

/**
 * The tracker that needs no help from the hypervisor: each cut re-reads the whole image in
 * large sequential reads and compares it with the baseline manifest. With a pre-filter,
 * reading runs at memory or disk speed computing keyed NH values, and only blocks whose value
 * is not the one recorded for their manifest entry are hashed with BLAKE3; without one, every
 * non-zero block is hashed (zero blocks never are). Reads return current bytes, so its
 * generations are fuzzy when the VM writes during a sync.
 *
 * A cut's own pass is the authority: it reads every block, so a block written at any time
 * before the pass reads it is found, background passes or not. Background passes only make
 * the table fresh, moving BLAKE3 work off the evacuation path.
 */
export class ScanTracker implements Tracker {
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly #options: ScanTrackerOptions;
  readonly #fs: FileSystem;
  readonly #limiter: RateLimiter;
  readonly #key: PrefilterKey | null;
  /** The scan workers, from the first pass that uses them until close. */
  #workers: ScanWorkers | null = null;
  #lastScan: ScanCost | null = null;
  /**
   * What the last pass found changed since the last cut besides the generation in flight, and
   * when that pass started (a cut's pass: nothing yet, as of its start); null before a pass.
   */
  #known: { blocks: Bitmap; asOfMs: number } | null = null;
  /**
   * Between the last two passes: blocks per second newly found changed outside the generation
   * in flight, and the share per second of its acknowledged blocks found rewritten (null: not
   * measured yet).
   */
  #rates: { newBlocksPerSecond: number; rewritesPerSecond: number } | null = null;
  /** The last cut's dirty set (null before a cut): the latest generation once it committed. */
  #lastCut: Bitmap | null = null;
  /** Smoothed unthrottled seconds per GiB of image, of background and of cut passes. */
  readonly #secondsPerGiB: { background: number | null; cut: number | null } = {
    background: null,
    cut: null,
  };
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #background: Promise<void> | null = null;
  #abortBackground: AbortController | null = null;
  /** Aborts the cut scan in progress ({@linkcode ScanTracker.interrupt}). */
  #abortCut: AbortController | null = null;
  /** Set by {@linkcode ScanTracker.interrupt}: no cut or background pass runs any more. */
  #interrupted: PresyncError | null = null;

  constructor(options: ScanTrackerOptions) {
    this.#options = options;
    this.#fs = options.fs ?? new DenoFileSystem();
    this.sizeBytes = options.identity.sizeBytes;
    this.blockSize = options.identity.blockSize;
    this.#limiter = new RateLimiter(
      options.readRateBytesPerSecond ?? 0,
      Math.max(SCAN_READ_BYTES, this.blockSize),
      performance.now(),
    );
    this.#key = options.prefilter
      ? new PrefilterKey(options.prefilter.secret, options.identity.blockSize)
      : null;
    this.#schedule();
  }

  /** The cost of the last finished pass (cut or background), or null before the first. */
  get lastScan(): ScanCost | null {
    return this.#lastScan;
  }

  async #openImage(): Promise<FileHandle> {
    const { imagePath, identity } = this.#options;
    const image = await io(`open source image ${imagePath}`, () => this.#fs.open(imagePath));
    const size = await image.size();
    if (size !== identity.sizeBytes) {
      image.close();
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `source image ${imagePath} is now ${size} bytes but volume \`${identity.name}\` was ` +
          `initialised at ${identity.sizeBytes} bytes; ${reseedHint(identity.name)}`,
      );
    }
    return image;
  }

  /**
   * What the last pass found changed since the last cut besides the generation in flight's
   * unacknowledged blocks (as of its start; after a cut's pass, nothing as of its start), and
   * for the writes since, the rates the last two passes measured (new blocks outside the
   * generation in flight, rewrites of its sent blocks); null before any pass finished.
   */
  changesNow(): TrackedChanges | null {
    if (!this.#known || this.#closed) return null;
    let lastCutOutside = 0;
    if (this.#lastCut) {
      using outside = this.#lastCut.clone().andNot(this.#known.blocks);
      lastCutOutside = outside.popcount();
    }
    return {
      lastCutOutside,
      blocks: this.#known.blocks.clone(),
      asOfMs: this.#known.asOfMs,
      exact: false,
      newBlocksPerSecond: this.#rates?.newBlocksPerSecond ?? null,
      rewritesPerSecond: this.#rates?.rewritesPerSecond ?? null,
    };
  }

  /**
   * A cut's scan from the measured speed of recent passes: the quicker of the smoothed
   * unthrottled seconds per GiB of the cut passes and of the background passes (a background
   * pass shares the CPU with the send; the final cut runs with the VM paused and nothing in
   * flight, as the cuts between generations do, while the first cut may have read a cold
   * image), times the image's GiB, and no less than the read-rate cap allows for what the last
   * pass read; null before a pass.
   */
  cutSecondsEstimate(): number | null {
    const { background, cut } = this.#secondsPerGiB;
    const perGiB = background === null
      ? cut
      : cut === null
      ? background
      : Math.min(background, cut);
    if (perGiB === null) return null;
    const seconds = perGiB * this.sizeBytes / GIB;
    const cap = this.#options.readRateBytesPerSecond ?? 0;
    const read = this.#lastScan?.bytesRead ?? 0;
    return cap > 0 ? Math.max(seconds, read / cap) : seconds;
  }

  /**
   * Records a finished pass's speed and what it found (see {@linkcode changesNow}): `found` is
   * a cut's dirty set (the cut's own: copied), or a background pass's blocks changed besides
   * the unacknowledged ones of `inFlight` (the generation in flight at its start, or null;
   * taken). Either measures the rates of new writes against the set before it: a cut's every
   * interval, so they stay fresh between background passes.
   */
  #recordPass(
    cost: ScanCost,
    found: Bitmap,
    inFlight: { dirty: Bitmap; acked: Bitmap } | null = null,
  ): void {
    this.#lastScan = cost;
    const perGiB = Math.max(0, cost.seconds - cost.throttledSeconds) / (this.sizeBytes / GIB);
    const before = this.#secondsPerGiB[cost.kind];
    this.#secondsPerGiB[cost.kind] = before === null
      ? perGiB
      : SPEED_SMOOTHING * perGiB + (1 - SPEED_SMOOTHING) * before;
    const known = this.#known;
    if (known && cost.startedAtMs > known.asOfMs) {
      const seconds = (cost.startedAtMs - known.asOfMs) / 1000;
      using fresh = found.clone().andNot(known.blocks);
      let rewritesPerSecond = 0;
      // The latest generation: the one in flight, else the last cut (committed since).
      const generation = inFlight?.dirty ?? this.#lastCut;
      const atDestination = inFlight?.acked ?? this.#lastCut;
      if (generation && atDestination && generation.size === fresh.size) {
        using sent = atDestination.clone().andNot(known.blocks);
        const candidates = sent.popcount();
        if (candidates > 0) {
          // The share rewritten, as a rate per block (each is rewritten once at most).
          const share = Math.min(sent.and(fresh).popcount(), candidates) / (candidates + 1);
          if (share > 0) rewritesPerSecond = -Math.log(1 - share) / seconds;
        }
        fresh.andNot(generation);
      }
      this.#rates = { newBlocksPerSecond: fresh.popcount() / seconds, rewritesPerSecond };
    }
    known?.blocks.free();
    if (cost.kind === "cut") {
      // Everything found is the new generation's; what changes next is new.
      this.#lastCut?.free();
      this.#lastCut = found.clone();
      found = new Bitmap(found.size);
    }
    this.#known = { blocks: found, asOfMs: cost.startedAtMs };
  }

  /** Stops a background pass (keeping what it settled) and scans the whole image. */
  async cut(): Promise<Cut> {
    // Set before the first await: an interrupt while a background pass winds down counts.
    const abort = new AbortController();
    this.#abortCut = abort;
    if (this.#interrupted) abort.abort(this.#interrupted);
    try {
      await this.#stopBackground();
      abort.signal.throwIfAborted();
      const image = await this.#openImage();
      try {
        const dirty = await this.#cutScan(image, abort.signal);
        return new ScanCut(image, dirty, this.#options.identity);
      } catch (err) {
        image.close();
        throw err;
      }
    } finally {
      this.#abortCut = null;
      this.#schedule();
    }
  }

  /**
   * Ends the cut scan in progress soon with `SESSION_CLOSED`, and every later cut at once (the
   * agent is stopping: a scan of a large image would hold the stop for minutes); stops the
   * background passes. What a cut settled is in its checkpoint, so a cut of the next run
   * resumes there.
   */
  interrupt(): void {
    this.#interrupted ??= new PresyncError(
      ErrorCode.SESSION_CLOSED,
      "the scan was interrupted: the agent is stopping",
    );
    this.#abortCut?.abort(this.#interrupted);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abortBackground?.abort();
  }

  async resume(dirty: Bitmap): Promise<Cut> {
    return new ScanCut(await this.#openImage(), dirty.clone(), this.#options.identity);
  }

  async #cutScan(image: FileHandle, signal: AbortSignal): Promise<Bitmap> {
    const { identity, checkpointPath } = this.#options;
    const blocks = blockCount(identity);
    const owner = { uuid: identity.uuid, baseline: this.#options.baselineGeneration };
    const restored = checkpointPath
      ? await loadCheckpoint(this.#fs, checkpointPath, owner, blocks)
      : null;
    const dirty = restored?.dirty ?? new Bitmap(blocks);
    const every = this.#options.checkpointEveryBytes ?? 2 ** 30;
    let sinceCheckpoint = 0;
    try {
      const cost = await this.#pass(
        "cut",
        image,
        dirty,
        restored?.nextBlock ?? 0,
        async (table, next, bytes) => {
          if (!checkpointPath || (sinceCheckpoint += bytes) < every) return;
          // Pieces settle in order, so every block before `next` is compared. The table goes
          // first: a resumed scan then finds the work of this one in it.
          await table?.flush();
          await saveCheckpoint(this.#fs, checkpointPath, owner, { dirty, nextBlock: next });
          sinceCheckpoint = 0;
        },
        signal,
      );
      if (checkpointPath) await io("remove scan checkpoint", () => this.#fs.remove(checkpointPath));
      this.#recordPass(cost, dirty);
      return dirty;
    } catch (err) {
      dirty.free();
      throw err;
    }
  }

  /** One pass from `startBlock`; what it cost. */
  async #pass(
    kind: ScanCost["kind"],
    image: FileHandle,
    dirty: Bitmap,
    startBlock: number,
    afterPiece?: (table: PrefilterTable | null, next: number, bytes: number) => Promise<void>,
    signal?: AbortSignal,
  ): Promise<ScanCost> {
    const { identity, manifest, prefilter } = this.#options;
    const started = performance.now();
    const startedAtMs = Date.now();
    const table = prefilter && this.#key
      ? await PrefilterTable.open(this.#fs, prefilter.tablePath, identity, this.#key.id)
      : null;
    const workers = this.#options.workers ??
      (identity.sizeBytes >= PARALLEL_SCAN_MIN_BYTES
        ? Math.max(2, navigator.hardwareConcurrency)
        : 1);
    const onWorkers = workers > 1 && !this.#closed && this.#fs instanceof DenoFileSystem;
    if (onWorkers && (this.#workers === null || this.#workers.failed)) {
      this.#workers?.close();
      this.#workers = new ScanWorkers(workers);
    }
    let second: FileHandle | null = null;
    try {
      // On this thread, a second handle lets two reads of the image run at once.
      if (!onWorkers) second = await this.#openImage();
      const prefiltered = table?.trusted ?? false;
      const stats = await scanPass({
        images: second ? [image, second] : [image],
        identity,
        manifest,
        limiter: this.#limiter,
        workers: onWorkers ? { pool: this.#workers!, path: this.#options.imagePath } : null,
        prefilter: table && this.#key && prefilter
          ? { key: this.#key, secret: prefilter.secret, table }
          : null,
        startBlock,
        dirty,
        afterPiece: afterPiece && ((next, bytes) => afterPiece(table, next, bytes)),
        signal,
      });
      const cost: ScanCost = {
        kind,
        seconds: (performance.now() - started) / 1000,
        throttledSeconds: stats.throttledMs / 1000,
        bytesRead: stats.bytesRead,
        holeBytes: stats.holeBytes,
        blocksHashed: stats.blocksHashed,
        bytesHashed: stats.bytesHashed,
        dirtyBlocks: dirty.popcount(),
        prefiltered,
        startedAtMs,
        endedAtMs: Date.now(),
      };
      return cost;
    } finally {
      second?.close();
      table?.close();
    }
  }

  #schedule(): void {
    const background = this.#options.background;
    if (!background || this.#closed || this.#interrupted) return;
    const timer = setTimeout(() => {
      this.#timer = undefined;
      this.#background = this.#runBackground(background.onError);
    }, background.intervalMs);
    // Scheduled passes alone do not keep the process running.
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  async #runBackground(onError: (err: PresyncError) => void): Promise<void> {
    const abort = new AbortController();
    this.#abortBackground = abort;
    let image: FileHandle | null = null;
    using dirty = new Bitmap(blockCount(this.#options.identity));
    // Asked before the pass reads anything: a block of it the pass finds is one still unsent.
    const asked = this.#options.inFlight?.() ?? null;
    const inFlight = asked?.dirty.size === dirty.size ? asked : null;
    try {
      image = await this.#openImage();
      const cost = await this.#pass("background", image, dirty, 0, undefined, abort.signal);
      const found = dirty.clone();
      if (inFlight) {
        using unacked = inFlight.dirty.clone().andNot(inFlight.acked);
        found.andNot(unacked);
      }
      this.#recordPass(cost, found, inFlight);
    } catch (err) {
      // Being stopped by a cut is not a failure; anything else is reported.
      if (!(abort.signal.aborted && err === abort.signal.reason)) {
        onError(toIoError(err, "background scan"));
      }
    } finally {
      asked?.dirty.free();
      asked?.acked.free();
      image?.close();
      this.#abortBackground = null;
      if (!abort.signal.aborted) this.#schedule();
    }
  }

  /** Cancels the next background pass and stops a running one (it keeps its settled work). */
  async #stopBackground(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abortBackground?.abort();
    await this.#background;
    this.#background = null;
    // A pass that ended just before the abort has scheduled the next one.
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Stops background passes and the scan workers, and releases the key. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#stopBackground();
    this.#known?.blocks.free();
    this.#known = null;
    this.#lastCut?.free();
    this.#lastCut = null;
    this.#workers?.close();
    this.#workers = null;
    this.#key?.free();
  }
}

class ScanCut implements Cut {
  readonly dirty: Bitmap;
  readonly pointInTime = false;
  readonly #image: FileHandle;
  readonly #identity: VolumeIdentity;

  constructor(image: FileHandle, dirty: Bitmap, identity: VolumeIdentity) {
    this.#image = image;
    this.dirty = dirty;
    this.#identity = identity;
  }

  async read(first: number, count: number): Promise<Uint8Array> {
    const { blockSize, sizeBytes } = this.#identity;
    const length = Math.min(count * blockSize, sizeBytes - first * blockSize);
    const data = new Uint8Array(length);
    const n = await io("read source image", () => this.#image.read(first * blockSize, data));
    if (n !== length) {
      throw new PresyncError(ErrorCode.IO, `source image ended at byte ${first * blockSize + n}`);
    }
    return data;
  }

  release(): Promise<void> {
    this.#image.close();
    this.dirty.free();
    return Promise.resolve();
  }
}
