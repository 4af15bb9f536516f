/**
 * The tracker plugin contract: how the source agent learns which blocks of a volume
 * changed, and how it reads them for sending.
 *
 * @module
 */

import type { Bitmap } from "./core/mod.ts";
import type { VmControl } from "./qemu/vm_control.ts";

/** One generation's dirty set and a way to read its blocks. */
export interface Cut {
  /** Blocks changed since the previous cut. Owned by the cut: freed by `release()`. */
  readonly dirty: Bitmap;
  /**
   * True when `read` returns the blocks as they were at the cut (copy-before-write), so
   * the generation is crash-consistent; false when it returns current bytes (the scan
   * tracker), so a block written after the cut is sent in its newer state.
   */
  readonly pointInTime: boolean;
  /**
   * Reads `count` consecutive blocks from block `first` (the last block of the volume may
   * be short). May be called many times, in any order; retrying is safe.
   */
  read(first: number, count: number): Promise<Uint8Array>;
  /**
   * Which 4 KiB pages of dirty `block` changed since the previous cut, as a page mask (bit
   * `i`: bytes `i·4096 …`; see `volume/page_masks.ts`); undefined when the block counts as
   * changed whole. A tracker that does not know pages leaves this out. Pure; any order;
   * answers after `release()` too (a folded generation asks the stopped cut's masks).
   */
  pageMask?(block: number): number | undefined;
  /** Releases the cut's resources. Idempotent. */
  release(): Promise<void>;
}

/**
 * What a tracker knows, between cuts, of the blocks written since the last cut: what an
 * evacuation started now sends besides the unacknowledged blocks of a generation in flight.
 */
export interface TrackedChanges {
  /**
   * The blocks (the caller's to free): every block written since the last cut (the NBD
   * tracker), or those a background scan pass found changed since the generation in flight
   * read or sent them (the scan tracker: blocks still unsent at the pass start are not in it,
   * they are the generation's).
   */
  readonly blocks: Bitmap;
  /** Until when writes are in `blocks`, ms since the epoch: now when `exact`. */
  readonly asOfMs: number;
  /** Whether `blocks` holds every write up to now (the tracker sees every write). */
  readonly exact: boolean;
  /**
   * For writes after `asOfMs` (not exact), as measured between the tracker's last two passes:
   * blocks per second newly changed outside the latest generation (the one in flight, else
   * the last cut; null: not measured yet)…
   */
  readonly newBlocksPerSecond: number | null;
  /**
   * … and the share per second of that generation's blocks at the destination (acknowledged,
   * or all once it committed) not in `blocks` found rewritten, e.g. a hot set sent then written
   * again (null: not measured yet).
   */
  readonly rewritesPerSecond: number | null;
  /**
   * Blocks of the last cut not in `blocks`: what may be rewritten once that generation has
   * committed (0 when exact or unknown).
   */
  readonly lastCutOutside: number;
  /**
   * The 4 KiB pages written in `blocks` (a block whose pages are not known counts all of
   * them); absent when the tracker knows no pages (then only blocks count).
   */
  readonly pages?: number;
}

/**
 * Tracks a source volume. `cut()` is called once per generation by one sender at a time;
 * `resume()` after a restart, for a generation cut before it.
 */
export interface Tracker {
  /** Volume size in bytes. */
  readonly sizeBytes: number;
  /** Block size in bytes. */
  readonly blockSize: number;
  /**
   * The blocks written since the last cut as far as the tracker knows them now (see
   * {@linkcode TrackedChanges}); null when it knows nothing between cuts (it finds changes only
   * by cutting, or counting them would need a round trip to the hypervisor). Cheap (no I/O, no
   * message round trip): called by every `status`, any number of times, at any time, also
   * while a cut is being sent. The returned bitmap is the caller's to free.
   */
  changesNow(): TrackedChanges | null;
  /** Swaps the tracked changes for a fresh set and returns them as a cut. */
  cut(): Promise<Cut>;
  /** A cut over `dirty` (copied) for a generation cut before a restart: reads current bytes. */
  resume(dirty: Bitmap): Promise<Cut>;
  /** Stops tracking and closes files. Idempotent. */
  close(): Promise<void>;
  /**
   * How long a cut started now would take to find its changes, s, from the measured speed of
   * the tracker's recent passes over the image (a tracker that reads the whole image at a
   * cut); absent or null: the caller takes the last cut's time. Cheap; any time.
   */
  cutSecondsEstimate?(): number | null;
  /**
   * Makes a `cut()` in progress end soon with an error, because the agent is stopping (a
   * tracker whose cut reads the whole image; others need not have it).
   */
  interrupt?(): void;
  /**
   * The VM whose disk this is, where the tracker reaches its hypervisor (the qemu tracker
   * over QMP): evacuation pauses it before the final cut and resumes it if that fails.
   */
  readonly vm?: VmControl;
}
