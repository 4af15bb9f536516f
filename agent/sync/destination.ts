import type { Bitmap } from "../core/mod.ts";
import type { ReplicaMeta, ResumeInfo } from "../store/replica_volume.ts";
import type { StagedBlock, StageResult } from "../store/staging_area.ts";

/**
 * What the sender needs from the destination of one volume. A local `ReplicaVolume`
 * satisfies it directly (local sync); the network path implements it over a session, so
 * both move exactly the same blocks.
 */
export interface Destination {
  /** Committed generation and what is durably staged of the next. Safe to call any time. */
  resumeInfo(): Promise<ResumeInfo> | ResumeInfo;
  /** Starts (or, for the same generation and set, resumes) staging a generation. */
  beginGeneration(generation: number, dirty: Bitmap, cutTimeMs: number): Promise<void>;
  /** Verifies and appends blocks; not durable until `flush`. */
  stage(blocks: StagedBlock[]): Promise<StageResult>;
  /** Makes staged blocks durable: after it resolves they count as acknowledged. */
  flush(): Promise<void>;
  /**
   * True when `stage` may be called while a `flush` is still in flight (the flush then
   * covers only what was staged before it): a remote destination handles requests in
   * order, so the sender need not wait a round trip at every acknowledgement point.
   */
  readonly concurrentFlush?: boolean;
  /** Commits the generation if its Merkle root matches. */
  commit(generation: number, expectedRoot: string): Promise<ReplicaMeta>;
}
