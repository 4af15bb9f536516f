/**
 * How long an evacuation started now would take, from what the volume's pipeline measured.
 * Pure: the caller gathers the inputs (`volume_status.ts`), so the model is tested with
 * seeded inputs and its accuracy is measured by `scripts/bench_evacuate.ts`.
 *
 * @module
 */

/** Where the link speed of a prediction comes from. */
export type LinkSource =
  /** Finished generations sent without a binding rate limit (smoothed). */
  | "goodput"
  /** The generation being sent now, without a binding rate limit (e.g. the first sync). */
  | "current_send"
  /** A short unthrottled probe while `--rate` held the sends back (see `link_probe.ts`). */
  | "probe";

import type { FreshCount, FreshSource } from "./fresh_blocks.ts";
import { PAGE_BYTES } from "../volume/page_masks.ts";

export type { FreshSource };

/** Where the final cut's scan time comes from. */
export type ScanSource =
  /** The measured speed of the tracker's recent passes (`Tracker.cutSecondsEstimate`). */
  | "scan_passes"
  /** As long as the last cut's (a tracker that does not read the image: about 0). */
  | "last_cut";

/** A send whose rate is above this share of the rate limit measured the limit, not the link. */
export const THROTTLED_SHARE = 0.8;

/** A send in progress says something about the link after this long on the wire, s. */
export const MIN_CURRENT_SEND_SECONDS = 2;

/** The send in progress, as measured so far. */
export interface CurrentSend {
  /** Seconds since it started. */
  seconds: number;
  /** Wire bytes it put on the session so far. */
  wireBytes: number;
  /** Blocks of it acknowledged so far. */
  ackedBlocks: number;
}

/** What a prediction is computed from. */
export interface PredictionInputs {
  blockSize: number;
  /** Blocks in the volume (the most any generation can hold). */
  totalBlocks: number;
  /** Whether a generation is in flight: it commits on its own before the final cut, unless folded. */
  generationInFlight: boolean;
  /**
   * Whether the destination folds a generation in flight into the final one (sync protocol 4,
   * docs/STORE.md "Folding"): then the evacuation is one generation and one commit.
   */
  folds: boolean;
  /** Blocks of the generation in flight not yet acknowledged by the destination. */
  unackedBlocks: number;
  /** Blocks of the generation in flight (its commit applies all of them). */
  generationBlocks: number;
  /** The blocks written since the last cut and their overlap with the generation in flight. */
  fresh: FreshCount;
  /**
   * Wire bytes per dirty block in recent generations (0: none finished yet; then the send in
   * progress tells, else a block at `compressionRatio`).
   */
  wireBytesPerBlock: number;
  /** Wire bytes per raw block byte so far (1 when unknown), the fallback of the above. */
  compressionRatio: number;
  /**
   * The 4 KiB pages still to send, where the tracker knows them (null: blocks only): those of
   * the unacknowledged blocks of the generation in flight (0: none in flight) and those written
   * since the last cut, a block whose pages are not known counting all of them. Only for a
   * replica that takes patches (it has a committed generation).
   */
  pages: { unacked: number; fresh: number } | null;
  /** Wire bytes per page sent in recent generations (0: none measured). */
  wireBytesPerPage: number;
  /**
   * Whether the final send waits for the destination's page digests before its first block
   * (a tracker that knows no pages, or a resumed cut, into a replica that takes patches): the
   * first group's answer, one round trip; later groups' are asked ahead.
   */
  digestsFirst: boolean;
  /** Smoothed goodput of finished unthrottled sends, bytes/s (0: none). */
  goodputBytesPerSecond: number;
  /** The send in progress, or null. */
  currentSend: CurrentSend | null;
  /** The background rate limit now, bytes/s (Infinity: none). */
  limitBytesPerSecond: number;
  /** The last unthrottled probe's measure of the link, bytes/s (0: none). */
  probeBytesPerSecond: number;
  /** The final cut's scan, s, and where that comes from. */
  scanSeconds: number;
  scanSource: ScanSource;
  /** The quickest recent commit (its round trip, the destination's apply and fsync), s. */
  commitSeconds: number;
  /** Median commit time per block of recent generations, beyond the round trip (0: none), s. */
  commitSecondsPerBlock: number;
  /**
   * Round-trip time of the link with no queue on it (the lowest measured), ms (null: not
   * measured yet): bytes queued behind a busy link are in the bytes term already.
   */
  rttMs: number | null;
}

/** A prediction with its terms, as `status --json` reports them. */
export interface EvacuationPrediction {
  /**
   * Seconds from `evacuate` to the verified final commit (null: no link speed known, or the
   * writes since the last cut are unknown).
   */
  seconds: number | null;
  /**
   * Blocks still to send: the unacknowledged part of the generation in flight ∪ fresh (when
   * folded; the sum when the generation in flight commits first).
   */
  blocks: number;
  /** Blocks written since the last cut, and where that count comes from. */
  freshBlocks: number;
  freshSource: FreshSource;
  /** Of `freshBlocks`, estimated for the writes after the tracker's set was taken. */
  freshEstimatedBlocks: number;
  /** How old the tracker's set of fresh blocks is, s (null: write-rate estimate only). */
  freshAsOfSeconds: number | null;
  /** Fresh blocks also unacknowledged in the generation in flight, counted once in `blocks`. */
  overlapBlocks: number;
  /** Wire bytes still to send… */
  bytes: number;
  /**
   * … counted from these pages at the recent wire cost per page (null: from the blocks at the
   * wire cost per block).
   */
  pages: number | null;
  /** The link speed used, bytes/s, and where it comes from (null: none known). */
  linkBytesPerSecond: number | null;
  linkSource: LinkSource | null;
  scanSeconds: number;
  scanSource: ScanSource;
  /** bytes / link speed. */
  sendSeconds: number | null;
  /** Commits before the evacuation ends (the generation in flight and the final one, or one when folded). */
  commits: number;
  /** Their time: each at least as long as the last one, longer for more blocks. */
  commitSeconds: number;
  /**
   * Round trips besides the commits': a fold's (the flush that stops the send), the first
   * page digests' (`PredictionInputs.digestsFirst`).
   */
  roundTripSeconds: number;
}

/** The link speed to predict with, and its source (goodput, then the current send, then a probe). */
export function linkEstimate(
  inputs: PredictionInputs,
): { bytesPerSecond: number; source: LinkSource } | null {
  if (inputs.goodputBytesPerSecond > 0) {
    return { bytesPerSecond: inputs.goodputBytesPerSecond, source: "goodput" };
  }
  const send = inputs.currentSend;
  if (send && send.seconds >= MIN_CURRENT_SEND_SECONDS && send.wireBytes > 0) {
    const rate = send.wireBytes / send.seconds;
    if (rate <= THROTTLED_SHARE * inputs.limitBytesPerSecond) {
      return { bytesPerSecond: rate, source: "current_send" };
    }
  }
  if (inputs.probeBytesPerSecond > 0) {
    return { bytesPerSecond: inputs.probeBytesPerSecond, source: "probe" };
  }
  return null;
}

/**
 * Predicts an evacuation started now: the generation in flight finishes and commits (the VM
 * is paused at once, so writes stop now) or, with a destination that folds, is folded into the
 * final cut and committed with it; the final cut is scanned, sent and committed,
 * and the Merkle roots are compared. A commit lasts at least as long as the quickest recent
 * one, and longer for a generation of more blocks, at the recent commits' median time per block
 * (the destination applies and syncs every block). The
 * bytes are the unacknowledged blocks of the generation in flight and the blocks written since
 * its cut ({@linkcode FreshCount}: the tracker's set, plus an estimate for writes it has not
 * seen yet), a block in both counted once when the destination folds, at the wire cost per
 * block of recent generations; where the tracker knows the pages, they are counted instead, at
 * the wire cost per page ({@linkcode pagesToSend}). They go at the link speed of
 * {@linkcode linkEstimate}. The scan is the tracker's estimate from its passes' measured
 * speed, else the last cut's time.
 * The evacuate hook's own time is not included.
 */
export function predictEvacuation(inputs: PredictionInputs): EvacuationPrediction {
  const { fresh } = inputs;
  const freshSource = fresh.source;
  const freshBlocks = fresh.blocks;
  const separate = inputs.generationInFlight && !inputs.folds;
  // Folded, a block both unacknowledged and written since crosses once; else both cross.
  const overlapBlocks = separate ? 0 : fresh.unackedOverlap;
  const blocks = Math.min(
    inputs.totalBlocks * (separate ? 2 : 1),
    inputs.unackedBlocks + freshBlocks - overlapBlocks,
  );
  const send = inputs.currentSend;
  const perBlock = inputs.wireBytesPerBlock > 0
    ? inputs.wireBytesPerBlock
    : send && send.ackedBlocks > 0
    ? send.wireBytes / send.ackedBlocks
    : inputs.blockSize * inputs.compressionRatio;
  const pages = pagesToSend(inputs, overlapBlocks);
  const bytes = Math.round(pages === null ? blocks * perBlock : pages * inputs.wireBytesPerPage);
  const link = linkEstimate(inputs);
  const commits = separate ? 2 : 1;
  const rttSeconds = (inputs.rttMs ?? 0) / 1000;
  // A generation costs no round trip besides its commit: the resume state is known from the
  // session's open or its last commit (`net/remote_destination.ts`), the begin travels with
  // the first blocks, and the commit goes right behind the final flush (its round trip is in
  // the commit term). A fold costs the flush that stops the send (the folded generation is
  // sent again without a resume query). A send that needs page digests waits one round trip
  // for the first group's. The evacuation's check of the replica is asked for behind its last
  // commit. (A generation resumed after a link cut asks for the resume state: not predicted.)
  const foldTrips = inputs.generationInFlight && inputs.folds ? 1 : 0;
  const roundTripSeconds = (foldTrips + (inputs.digestsFirst ? 1 : 0)) * rttSeconds;
  const commitOf = (generationBlocks: number) =>
    Math.max(inputs.commitSeconds, rttSeconds + inputs.commitSecondsPerBlock * generationBlocks);
  const commitSeconds = !inputs.generationInFlight ? commitOf(blocks) : inputs.folds
    ? commitOf(
      Math.min(inputs.totalBlocks, inputs.generationBlocks + freshBlocks - fresh.generationOverlap),
    )
    : commitOf(freshBlocks) + commitOf(inputs.generationBlocks);
  const sendSeconds = link ? bytes / link.bytesPerSecond : null;
  const seconds = sendSeconds === null || freshSource === "unknown"
    ? null
    : inputs.scanSeconds + sendSeconds + commitSeconds + roundTripSeconds;
  return {
    seconds,
    blocks,
    freshBlocks,
    freshSource,
    freshEstimatedBlocks: fresh.estimatedBlocks,
    freshAsOfSeconds: fresh.asOfSeconds === null ? null : Math.round(fresh.asOfSeconds * 10) / 10,
    overlapBlocks,
    bytes,
    pages: pages === null ? null : Math.round(pages),
    linkBytesPerSecond: link?.bytesPerSecond ?? null,
    linkSource: link?.source ?? null,
    scanSeconds: inputs.scanSeconds,
    scanSource: inputs.scanSource,
    sendSeconds,
    commits,
    commitSeconds,
    roundTripSeconds,
  };
}

/**
 * The pages an evacuation started now sends, where the tracker knows them (null: it does
 * not, or no wire cost per page is measured yet): the unacknowledged pages of the generation
 * in flight plus those written since the last cut, less, for the `overlapBlocks` blocks in
 * both that a fold sends once with the union of their pages, the pages expected in both sets
 * of such a block when each set's pages are spread over the block independently (its mean
 * pages in the one times its mean in the other over the pages per block).
 */
function pagesToSend(inputs: PredictionInputs, overlapBlocks: number): number | null {
  if (!inputs.pages || inputs.wireBytesPerPage <= 0) return null;
  const { unacked, fresh } = inputs.pages;
  const knownFresh = inputs.fresh.blocks - inputs.fresh.estimatedBlocks;
  if (overlapBlocks === 0 || inputs.unackedBlocks === 0 || knownFresh === 0) return unacked + fresh;
  const perBlock = inputs.blockSize / PAGE_BYTES;
  const inBoth = (unacked / inputs.unackedBlocks) * (fresh / knownFresh) / perBlock;
  return unacked + fresh - overlapBlocks * Math.min(inBoth, perBlock);
}
