import type { KeptGeneration } from "./replica_backend.ts";
import type { VolumeSummary } from "./replica_store.ts";

/**
 * One row of `presync volumes` (its `--json` shape): what an operator needs to know about a
 * replica before keeping, exporting or deleting it.
 */
export interface VolumeListing {
  name: string;
  sizeBytes: number;
  blockSize: number;
  /** Last committed generation (0: nothing committed yet). */
  committedGeneration: number;
  /** Age of the committed generation's cut, seconds (its RPO); null before the first. */
  ageSeconds: number | null;
  /** When the destination committed it (ms since the epoch); null before the first. */
  committedAtMs: number | null;
  /** Bytes of storage the replica occupies; null when the back end cannot tell. */
  allocatedBytes: number | null;
  /** Seeding its first generation (nothing to export or verify yet). */
  initialising: boolean;
  /** The generation being received, if any. */
  stagingGeneration: number | null;
  /**
   * Committed generations kept (RBD snapshots, `serve --keep N`), oldest first; null when the
   * back end keeps only the last one.
   */
  generations: KeptGeneration[] | null;
  /** Whether a source agent is connected to it now (null: not known offline). */
  sourceConnected: boolean | null;
  /** Whether an export of it runs now (null: not known offline). */
  exported: boolean | null;
}

/** The listing row of a store's summary; `nowMs` is the clock for ages. */
export function volumeListing(summary: VolumeSummary, nowMs = Date.now()): VolumeListing {
  const { meta } = summary;
  const committed = meta.committedGeneration > 0;
  return {
    name: summary.name,
    sizeBytes: meta.identity.sizeBytes,
    blockSize: meta.identity.blockSize,
    committedGeneration: meta.committedGeneration,
    ageSeconds: committed && meta.cutTimeMs > 0 ? (nowMs - meta.cutTimeMs) / 1000 : null,
    committedAtMs: committed ? meta.committedAtMs : null,
    allocatedBytes: summary.allocatedBytes,
    initialising: summary.initialising,
    stagingGeneration: summary.stagingGeneration,
    generations: summary.generations,
    sourceConnected: null,
    exported: null,
  };
}
