import type { PresyncError } from "../errors.ts";
import type { PendingGeneration } from "../source/source_state.ts";
import type { EvacuationStatus } from "./evacuation.ts";

/**
 * What a volume is doing: `starting` (not connected yet), `idle` (in sync, waiting for the
 * next cut), `scanning`, `sending`, `evacuating`, `evacuated` (done; it sends nothing more),
 * `disconnected` (its destination is unreachable; retried), `retrying` (its destination
 * refused it for a while, e.g. a full disk; retried with backoff), `parked` (stopped by a
 * fault that needs the operator: see `lastError`; `presync resume` retries), `error` (the
 * whole agent stopped).
 */
export type VolumePhase =
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
  /** Blocks likely written since the last cut (see `WriteRate.freshBlocks`). */
  freshBlocks: number;
  rawBytes: number;
  wireBytes: number;
  goodputBytesPerSecond: number;
  /** How long the last scan took, ms. */
  lastScanMs: number;
  /** How long the last commit took at the destination (prepare, apply), ms. */
  lastCommitMs: number;
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
  /** Estimated bytes on the wire still to send: the pending generation plus new writes. */
  pendingBytes: number;
  /** Estimated wire bytes of the whole pending generation (0 when none), for progress. */
  generationBytes: number;
  /** Estimated wire bytes of the pending generation not yet acknowledged, for progress. */
  generationPendingBytes: number;
  goodputBytesPerSecond: number;
  rttMs: number | null;
  /** Final scan + pending bytes at the measured goodput + commit + two round trips. */
  predictedEvacuationSeconds: number | null;
  paused: boolean;
  /** The last error this volume met (cleared when a generation commits), for operators. */
  lastError: string | null;
  /** Its stable code (`VOLUME_MISMATCH`, `NO_SPACE`…), for alerts and per-code metrics. */
  lastErrorCode: string | null;
  /** The evacuation's step, while one runs or once one ended. */
  evacuation: EvacuationStatus | null;
}

/**
 * Status of a volume, with the evacuation prediction: the final scan (as long as the last
 * one; the final verify compares roots only), the pending bytes (the unacknowledged part of
 * the pending generation, plus blocks written since the last cut at the last generation's
 * rate, capped at the last generation's count: a hot set's rewrites do not add up)
 * compressed at the ratio seen so far, sent at the measured goodput, the commit (as long as
 * the last one), plus two round trips (final flush and commit).
 */
export function volumeStatus(v: VolumeSnapshot, rttMs: number | undefined): VolumeStatus {
  const { blockSize, pending } = v;
  let pendingBlocks = 0;
  let generationBlocks = 0;
  let generationPendingBlocks = 0;
  if (pending) {
    generationBlocks = pending.dirty.popcount();
    using unacked = pending.dirty.clone();
    pendingBlocks = unacked.andNot(pending.acked).popcount();
    generationPendingBlocks = pendingBlocks;
  }
  if (v.phase !== "evacuated") {
    const blocks = pending?.dirty.size ?? Infinity;
    pendingBlocks = Math.min(blocks, pendingBlocks + v.freshBlocks);
  }
  const ratio = v.rawBytes > 0 ? Math.min(1, v.wireBytes / v.rawBytes) : 1;
  const pendingBytes = Math.round(pendingBlocks * blockSize * ratio);
  const goodput = v.goodputBytesPerSecond;
  const rtt = rttMs ?? null;
  const predicted = goodput > 0
    ? (v.lastScanMs + v.lastCommitMs) / 1000 + pendingBytes / goodput + 2 * (rtt ?? 0) / 1000
    : null;
  const paused = v.paused && v.phase !== "evacuated" && v.phase !== "parked" &&
    v.phase !== "error";
  return {
    name: v.name,
    state: paused ? "paused" : v.phase,
    committedGeneration: v.committedGeneration,
    rpoSeconds: v.committedCutTimeMs > 0 ? (Date.now() - v.committedCutTimeMs) / 1000 : null,
    pendingBytes,
    generationBytes: Math.round(generationBlocks * blockSize * ratio),
    generationPendingBytes: Math.round(generationPendingBlocks * blockSize * ratio),
    goodputBytesPerSecond: Math.round(goodput),
    rttMs: rtt === null ? null : Math.round(rtt * 10) / 10,
    predictedEvacuationSeconds: predicted === null ? null : Math.round(predicted * 100) / 100,
    paused: v.paused,
    lastError: v.lastError,
    lastErrorCode: v.lastErrorCode,
    evacuation: v.evacuation,
  };
}

/** Status of a volume that could not start (parked with `error`; nothing else is known). */
export function unstartedStatus(name: string, error: PresyncError): VolumeStatus {
  return {
    name,
    state: "parked",
    committedGeneration: 0,
    rpoSeconds: null,
    pendingBytes: 0,
    generationBytes: 0,
    generationPendingBytes: 0,
    goodputBytesPerSecond: 0,
    rttMs: null,
    predictedEvacuationSeconds: null,
    paused: false,
    lastError: `the volume could not start: ${error.message}`,
    lastErrorCode: error.code,
    evacuation: null,
  };
}
