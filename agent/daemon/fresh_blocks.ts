/**
 * How many blocks were written since the last cut, and how many of them are also in the
 * generation in flight: an evacuation sends the union of the two sets once (the final cut is
 * folded into the generation in flight), so a block in both must not be counted twice. Pure
 * over the tracker's set, the pending generation and the clock.
 *
 * @module
 */

import type { Bitmap } from "../core/mod.ts";
import type { TrackedChanges } from "../tracker.ts";

/** Where the count of blocks written since the last cut comes from. */
export type FreshSource =
  /** The tracker's dirty set, exactly (the NBD tracker sees every write). */
  | "tracker"
  /**
   * The last background scan pass's changed blocks, and for the writes since it started the
   * rate at which the last two passes found new blocks changed.
   */
  | "scan"
  /** As `scan`, but with the write rate of the last generations for the writes since it. */
  | "scan_write_rate"
  /** Estimated from the write rate of the last generations (`WriteRate.freshBlocks`). */
  | "write_rate"
  /** Neither: no write rate measured yet (fewer than two cuts); no prediction is made. */
  | "unknown";

/** The blocks written since the last cut, as `status` counts them. */
export interface FreshCount {
  /** Blocks written since the last cut: known to the tracker, plus `estimatedBlocks`. */
  blocks: number;
  /** Of them, estimated for the writes after the tracker's set was taken (none when exact). */
  estimatedBlocks: number;
  /**
   * Of the known ones, those also among the unacknowledged blocks of the generation in flight:
   * a fold sends them once.
   */
  unackedOverlap: number;
  /** Of the known ones, those also in the generation in flight: its fold commits them once. */
  generationOverlap: number;
  source: FreshSource;
  /** How old the tracker's set is, s (0: exact now; null: no set, an estimate only). */
  asOfSeconds: number | null;
  /** The pages written in the blocks, when the tracker's exact set knows them (else null). */
  pages: number | null;
}

/** The write-rate estimate of the last generations (see `WriteRate`). */
export interface WriteRateEstimate {
  /** Blocks likely written since the last cut (null: no rate measured yet). */
  freshBlocks: number | null;
  /** Blocks dirtied per second (null: not measured yet). */
  blocksPerSecond: number | null;
}

/** The generation in flight as far as counting goes. */
export interface InFlightSets {
  /** Its blocks. */
  dirty: Bitmap;
  /** Those the destination acknowledged. */
  acked: Bitmap;
}

/**
 * Counts the blocks written since the last cut from what the tracker knows (`changes`, whose
 * bitmap the caller frees), against the generation in flight `pending`: exact for a tracker
 * that sees every write; for a scan, its last pass's set plus, for the time since that pass
 * started, new blocks outside the latest generation at the rate the passes measured (else the
 * write rate), never more than the blocks outside both sets, and that generation's blocks at
 * the destination (acknowledged, or the last cut's once committed) rewritten at the share per
 * second the passes measured. Without a set from the tracker, the
 * write-rate estimate with no overlap known.
 */
export function countFresh(
  changes: TrackedChanges | null,
  pending: InFlightSets | null,
  nowMs: number,
  writes: WriteRateEstimate,
): FreshCount {
  if (!changes) {
    return {
      blocks: writes.freshBlocks ?? 0,
      estimatedBlocks: writes.freshBlocks ?? 0,
      unackedOverlap: 0,
      generationOverlap: 0,
      source: writes.freshBlocks === null ? "unknown" : "write_rate",
      asOfSeconds: null,
      pages: null,
    };
  }
  const known = changes.blocks;
  const knownBlocks = known.popcount();
  let unackedOverlap = 0;
  let generationOverlap = 0;
  // Blocks of the latest generation at the destination not in the set, which may be rewritten:
  // the acknowledged ones of the generation in flight, else the last cut's (committed).
  let sent = changes.lastCutOutside;
  let outside = known.size - knownBlocks - sent;
  if (pending && pending.dirty.size === known.size) {
    generationOverlap = known.countAnd(pending.dirty);
    // The acknowledged blocks are blocks of the generation (acked ⊆ dirty).
    const knownSent = known.countAnd(pending.acked);
    unackedOverlap = generationOverlap - knownSent;
    outside = known.size - knownBlocks - (pending.dirty.popcount() - generationOverlap);
    sent = pending.acked.popcount() - knownSent;
  }
  const asOfSeconds = Math.max(0, (nowMs - changes.asOfMs) / 1000);
  if (changes.exact) {
    return {
      blocks: knownBlocks,
      estimatedBlocks: 0,
      unackedOverlap,
      generationOverlap,
      source: "tracker",
      asOfSeconds: 0,
      pages: changes.pages ?? null,
    };
  }
  const rate = changes.newBlocksPerSecond ?? writes.blocksPerSecond;
  // New blocks outside both sets at the measured rate; sent blocks rewritten at their measured
  // share per second (each at most once).
  const rewrites = sent * (1 - Math.exp(-(changes.rewritesPerSecond ?? 0) * asOfSeconds));
  const estimatedBlocks = rate === null
    ? 0
    : Math.min(outside, Math.round(rate * asOfSeconds)) + Math.round(rewrites);
  return {
    blocks: knownBlocks + estimatedBlocks,
    estimatedBlocks,
    unackedOverlap,
    generationOverlap,
    source: rate === null
      ? "unknown"
      : changes.newBlocksPerSecond === null
      ? "scan_write_rate"
      : "scan",
    asOfSeconds,
    pages: null,
  };
}
