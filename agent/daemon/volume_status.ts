import type { Bitmap } from "../core/mod.ts";
import type { RemoteDestination, TransferCounters } from "../net/remote_destination.ts";
import type { RateLimiter } from "../rate_limiter.ts";
import type { SourceState } from "../source/source_state.ts";
import type { Cut, Tracker } from "../tracker.ts";
import type { EvacuateReport } from "./source_agent.ts";

/** What a volume is doing. */
export type VolumePhase =
  | "starting"
  | "idle"
  | "scanning"
  | "sending"
  | "evacuating"
  | "evacuated"
  | "disconnected"
  | "error";

/** An evacuation in progress. */
export interface Evacuation {
  promise: Promise<EvacuateReport>;
  resolve: (report: EvacuateReport) => void;
  reject: (err: unknown) => void;
  startedMs: number;
  wireBytesAtStart: number;
  hookDone: boolean;
  /** The generation cut after the request: its commit ends the evacuation. */
  finalGeneration: number | null;
}

/** The source agent's runtime state of one volume. */
export interface AgentVolume {
  name: string;
  image: string;
  state: SourceState;
  tracker: Tracker;
  phase: VolumePhase;
  paused: boolean;
  resumeGate: Promise<void> | null;
  releaseGate?: () => void;
  evacuation: Evacuation | null;
  committedGeneration: number;
  committedCutTimeMs: number;
  /** Merkle root of the committed generation (hex), as the destination reported it. */
  committedRoot: string;
  /** The open sync stream to the destination, while connected. */
  destination: RemoteDestination | null;
  limiter: RateLimiter;
  /** Bytes sent, cumulative across reconnects (live while sending). */
  counters: TransferCounters;
  goodputBytesPerSecond: number;
  lastScanMs: number;
  /** How long the last commit took at the destination (prepare, apply), ms. */
  lastCommitMs: number;
  dirtyBlocksPerSecond: number;
  /** Blocks the last generation (after the first) found dirty. */
  lastDirtyBlocks: number;
  lastCutMs: number;
  lastError: string | null;
  /** The last generation's dirty set: likely rewritten soon, so sent last. */
  hot: Bitmap | null;
  /** The cut of the generation being sent (postcopy fetches read it), while sending. */
  cut: Cut | null;
}

/** `status --json` of one volume. */
export interface VolumeStatus {
  name: string;
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
  lastError: string | null;
}

/**
 * Status of a volume, with the evacuation prediction: the final scan (as long as the last
 * one; the final verify compares roots only), the pending bytes (the unacknowledged part of
 * the pending generation, plus blocks written since the last cut at the last generation's
 * rate, capped at the last generation's count: a hot set's rewrites do not add up)
 * compressed at the ratio seen so far, sent at the measured goodput, the commit (as long as
 * the last one), plus two round trips (final flush and commit).
 */
export function volumeStatus(v: AgentVolume, rttMs: number | undefined): VolumeStatus {
  const { blockSize } = v.state.identity;
  const pending = v.state.pending;
  let pendingBlocks = 0;
  let generationBlocks = 0;
  let generationPendingBlocks = 0;
  if (pending) {
    generationBlocks = pending.dirty.popcount();
    const unacked = pending.dirty.clone();
    pendingBlocks = unacked.andNot(pending.acked).popcount();
    generationPendingBlocks = pendingBlocks;
    unacked.free();
  }
  if (v.phase !== "evacuated") {
    // Blocks written since the last cut, at the rate the last generation saw.
    const sinceCut = (Date.now() - v.lastCutMs) / 1000;
    const blocks = pending?.dirty.size ?? Infinity;
    // Rewrites of the same blocks do not add up: no more than the last generation saw.
    const fresh = Math.min(Math.round(v.dirtyBlocksPerSecond * sinceCut), v.lastDirtyBlocks);
    pendingBlocks = Math.min(blocks, pendingBlocks + fresh);
  }
  const { wireBytes, rawBytes } = v.counters;
  const ratio = rawBytes > 0 ? Math.min(1, wireBytes / rawBytes) : 1;
  const pendingBytes = Math.round(pendingBlocks * blockSize * ratio);
  const goodput = v.goodputBytesPerSecond;
  const rtt = rttMs ?? null;
  const predicted = goodput > 0
    ? (v.lastScanMs + v.lastCommitMs) / 1000 + pendingBytes / goodput + 2 * (rtt ?? 0) / 1000
    : null;
  return {
    name: v.name,
    state: v.paused && v.phase !== "evacuated" ? "paused" : v.phase,
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
  };
}
