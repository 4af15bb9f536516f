import type { PresyncError } from "../errors.ts";
import type { PendingGeneration } from "../source/source_state.ts";
import type { EvacuationStatus } from "./evacuation.ts";
import {
  type CurrentSend,
  type EvacuationPrediction,
  predictEvacuation,
  type ScanSource,
} from "./evacuation_prediction.ts";
import type { FreshCount } from "./fresh_blocks.ts";

/**
 * What a volume is doing: `opening` (the agent is opening it: reading its state, and after a
 * stop without a saved dirty set, reading its image to find what changed), `starting` (not
 * connected yet), `idle` (in sync, waiting for the
 * next cut), `scanning`, `sending`, `evacuating`, `evacuated` (done; it sends nothing more),
 * `disconnected` (its destination is unreachable; retried), `retrying` (its destination
 * refused it for a while, e.g. a full disk; retried with backoff), `parked` (stopped by a
 * fault that needs the operator: see `lastError`; `presync resume` retries), `error` (the
 * whole agent stopped).
 */
export type VolumePhase =
  | "opening"
  | "starting"
  | "idle"
  | "scanning"
  | "sending"
  | "evacuating"
  | "evacuated"
  | "disconnected"
  | "retrying"
  | "parked"
  | "error";

/** What the status of a volume is computed from (taken by the volume's pipeline). */
export interface VolumeSnapshot {
  name: string;
  phase: VolumePhase;
  paused: boolean;
  blockSize: number;
  committedGeneration: number;
  /** When the source cut the committed generation (0: unknown). */
  committedCutTimeMs: number;
  /** The generation in flight, or null. */
  pending: PendingGeneration | null;
  /** Blocks written since the last cut and their overlap with `pending` (`countFresh`). */
  fresh: FreshCount;
  /** Whether the destination on the current link folds a generation in flight (sync protocol 4). */
  folds: boolean;
  /** Blocks in the volume. */
  totalBlocks: number;
  /** Smoothed wire bytes per block of the generations sent (0: none yet). */
  wireBytesPerBlock: number;
  /** Smoothed wire bytes per 4 KiB page of the generations sent (0: none yet). */
  wireBytesPerPage: number;
  /** The pages still to send, where known (`PredictionInputs.pages`). */
  pages: { unacked: number; fresh: number } | null;
  /** Whether the final send would wait for page digests first (`PredictionInputs.digestsFirst`). */
  digestsFirst: boolean;
  /** Median commit time per block of the last generations, beyond the round trip (0: none), s. */
  commitSecondsPerBlock: number;
  /** The send in progress, or null. */
  currentSend: CurrentSend | null;
  /** The background rate limit now, bytes/s (Infinity: none). */
  limitBytesPerSecond: number;
  /** The last link probe's measure, bytes/s (0: none). */
  probeBytesPerSecond: number;
  rawBytes: number;
  wireBytes: number;
  goodputBytesPerSecond: number;
  /** How long the final cut's scan would take, s, and where that comes from. */
  scanSeconds: number;
  scanSource: ScanSource;
  /** The quickest of the last generations' commits (round trip, prepare, apply), ms. */
  quickestCommitMs: number;
  /**
   * The lowest round trip seen on the volume's links, ms (null: none yet): what a round trip
   * costs once the queue the sends built has drained.
   */
  baseRttMs: number | null;
  lastError: string | null;
  lastErrorCode: string | null;
  /** The evacuation in progress or finished, if any. */
  evacuation: EvacuationStatus | null;
}

/** `status --json` of one volume. */
export interface VolumeStatus {
  name: string;
  /** A {@linkcode VolumePhase}, or `paused`. */
  state: string;
  committedGeneration: number;
  /** Age of the destination's last committed cut, seconds. */
  rpoSeconds: number | null;
  /**
   * Estimated bytes on the wire still to send: the unacknowledged part of the pending
   * generation plus the blocks written since the last cut.
   */
  pendingBytes: number;
  /** Estimated wire bytes of the whole pending generation (0 when none), for progress. */
  generationBytes: number;
  /** Estimated wire bytes of the pending generation not yet acknowledged, for progress. */
  generationPendingBytes: number;
  goodputBytesPerSecond: number;
  rttMs: number | null;
  /** `prediction.seconds`, rounded (null: no link speed known yet). */
  predictedEvacuationSeconds: number | null;
  /** The evacuation prediction with its inputs (null once evacuated or before the start). */
  prediction: EvacuationPrediction | null;
  paused: boolean;
  /** The last error this volume met (cleared when a generation commits), for operators. */
  lastError: string | null;
  /** Its stable code (`VOLUME_MISMATCH`, `NO_SPACE`…), for alerts and per-code metrics. */
  lastErrorCode: string | null;
  /** The evacuation's step, while one runs or once one ended. */
  evacuation: EvacuationStatus | null;
}

/**
 * Status of a volume, with the evacuation prediction of {@linkcode predictEvacuation}: the
 * unacknowledged part of the pending generation and the blocks written since the last cut
 * (the tracker's set, a block in both once; else the write-rate estimate), at the wire cost
 * per block seen so far and the link speed measured (goodput, the current send, or a probe
 * while `--rate` binds), plus the final scan, the commits and their round trips.
 */
export function volumeStatus(v: VolumeSnapshot, rttMs: number | undefined): VolumeStatus {
  const { blockSize, pending } = v;
  let generationBlocks = 0;
  let unackedBlocks = 0;
  if (pending) {
    generationBlocks = pending.dirty.popcount();
    unackedBlocks = pending.dirty.countAndNot(pending.acked);
  }
  const ratio = v.rawBytes > 0 ? Math.min(1, v.wireBytes / v.rawBytes) : 1;
  const rtt = rttMs ?? null;
  const evacuated = v.phase === "evacuated";
  const prediction = evacuated ? null : predictEvacuation({
    blockSize,
    totalBlocks: v.totalBlocks,
    generationInFlight: pending !== null,
    folds: v.folds,
    unackedBlocks,
    generationBlocks,
    fresh: v.fresh,
    wireBytesPerBlock: v.wireBytesPerBlock,
    compressionRatio: ratio,
    pages: v.pages,
    wireBytesPerPage: v.wireBytesPerPage,
    digestsFirst: v.digestsFirst,
    goodputBytesPerSecond: v.goodputBytesPerSecond,
    currentSend: v.currentSend,
    limitBytesPerSecond: v.limitBytesPerSecond,
    probeBytesPerSecond: v.probeBytesPerSecond,
    scanSeconds: v.scanSeconds,
    scanSource: v.scanSource,
    commitSeconds: v.quickestCommitMs / 1000,
    commitSecondsPerBlock: v.commitSecondsPerBlock,
    // Not the last ping: behind a busy link it also counts the queue, which the bytes term
    // counts already (the queued bytes are unacknowledged).
    rttMs: v.baseRttMs,
  });
  const perBlock = prediction && prediction.blocks > 0 ? prediction.bytes / prediction.blocks : 0;
  const paused = v.paused && !evacuated && v.phase !== "parked" && v.phase !== "error";
  const seconds = prediction?.seconds ?? null;
  return {
    name: v.name,
    state: paused ? "paused" : v.phase,
    committedGeneration: v.committedGeneration,
    rpoSeconds: v.committedCutTimeMs > 0 ? (Date.now() - v.committedCutTimeMs) / 1000 : null,
    pendingBytes: evacuated ? Math.round(unackedBlocks * blockSize * ratio) : prediction!.bytes,
    generationBytes: Math.round(generationBlocks * (perBlock || blockSize * ratio)),
    generationPendingBytes: Math.round(unackedBlocks * (perBlock || blockSize * ratio)),
    goodputBytesPerSecond: Math.round(v.goodputBytesPerSecond),
    rttMs: rtt === null ? null : Math.round(rtt * 10) / 10,
    predictedEvacuationSeconds: seconds === null ? null : Math.round(seconds * 100) / 100,
    prediction,
    paused: v.paused,
    lastError: v.lastError,
    lastErrorCode: v.lastErrorCode,
    evacuation: v.evacuation,
  };
}

/** Status of a volume the agent is still opening (nothing is known of it yet). */
export function openingStatus(name: string): VolumeStatus {
  return unknownStatus(name, "opening", null);
}

/** Status of a volume that could not start (parked with `error`; nothing else is known). */
export function unstartedStatus(name: string, error: PresyncError): VolumeStatus {
  return unknownStatus(name, "parked", error);
}

function unknownStatus(name: string, state: VolumePhase, error: PresyncError | null): VolumeStatus {
  return {
    name,
    state,
    committedGeneration: 0,
    rpoSeconds: null,
    pendingBytes: 0,
    generationBytes: 0,
    generationPendingBytes: 0,
    goodputBytesPerSecond: 0,
    rttMs: null,
    predictedEvacuationSeconds: null,
    prediction: null,
    paused: false,
    lastError: error ? `the volume could not start: ${error.message}` : null,
    lastErrorCode: error ? error.code : null,
    evacuation: null,
  };
}
