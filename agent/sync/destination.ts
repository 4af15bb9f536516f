/**
 * The destination contract: what the sender needs from the destination of one volume, and
 * the data types that cross between them. A local replica (`store/`) implements it directly;
 * the network path implements it over a session (`daemon/paced_destination.ts` over
 * `net/remote_destination.ts`), so both move exactly the same blocks. The store imports these
 * types from here: the sender never imports the store.
 *
 * @module
 */

import type { Bitmap } from "../core/mod.ts";
import type { VolumeIdentity } from "../volume/volume_identity.ts";

/** One block handed to the destination: its bytes with their BLAKE3, or `data: null` for zeros. */
export interface StagedBlock {
  block: number;
  /** The block's bytes (exactly its length), or null for an all-zero block. */
  data: Uint8Array | null;
  /** BLAKE3 of `data`, as the sender computed it. Required when `data` is not null. */
  hash?: Uint8Array;
  /**
   * The 4 KiB pages of `data` that differ from the destination's committed copy, as a page
   * mask (`volume/page_masks.ts`); absent: unknown, the whole block. A destination may send
   * only those pages (a patch, checked against `hash` once rebuilt) or ignore it.
   */
  pages?: number;
}

/**
 * A block that crossed as a patch (`codec/block_patch.ts`), as a destination's store stages
 * it: laid over the store's copy of the block and staged only if the result has `hash`, the
 * source's BLAKE3 of the whole new block.
 */
export interface StagedPatch {
  block: number;
  /** The encoded patch (bounded by `maxPatchLength` of the block size). */
  patch: Uint8Array;
  hash: Uint8Array;
}

/** Most blocks one {@linkcode Destination.pageDigests} call may name. */
export const MAX_DIGEST_BLOCKS = 128;

/** What a flush found besides durability. */
export interface FlushResult {
  /**
   * Blocks staged as patches that did not rebuild `hash` over the destination's copy: not
   * staged (nor acknowledged by this flush); the sender stages them again without `pages`.
   */
  resend: number[];
}

/** What the destination did with a batch of blocks. */
export interface StageResult {
  /** Blocks appended to the staging area (or, while seeding in place, written to the image). */
  staged: number;
  /** Blocks already staged in this generation, ignored. */
  duplicates: number;
  /** Blocks whose bytes did not match their hash: not staged, to be sent again. */
  rejected: number[];
  /**
   * Patches ({@linkcode StagedPatch}) that did not rebuild their hash over the store's copy:
   * not staged, to be sent again whole. Absent: none.
   */
  resend?: number[];
}

/** What a source needs to resume: the committed state and the generation being staged. */
export interface ResumeInfo {
  identity: VolumeIdentity;
  committedGeneration: number;
  /** Merkle root of the replica at the committed generation (hex). */
  merkleRoot: string;
  /** When the source cut the committed generation (ms since the epoch); its age is the RPO. */
  cutTimeMs: number;
  /**
   * The generation being staged, with the blocks durably received so far; null if none. The
   * caller owns (and frees) `received`.
   */
  staged: { generation: number; received: Bitmap } | null;
}

/** The committed state of a replica, as the sender sees it after a commit. */
export interface CommittedState {
  /** Last committed generation; 0 for a new, all-zero replica. */
  committedGeneration: number;
  /** Merkle root of the replica at that generation (hex). */
  merkleRoot: string;
  /** When the source cut that generation (ms since the epoch). */
  cutTimeMs: number;
}

/** Options of {@linkcode Destination.beginGeneration}. */
export interface BeginOptions {
  /**
   * The last generation of an evacuation: a destination that serves the volume to a VM
   * (postcopy) may serve it before it is complete. Ignored by a local replica.
   */
  final?: boolean;
  /**
   * Folds blocks re-dirtied since the generation was cut into it (an evacuation's final cut
   * taken while the generation was in flight, docs/STORE.md "Folding"): when the staged
   * generation's set plus these equals `dirty`, what it staged of the other blocks is kept
   * and these count as not staged (they are staged again, in their newer version).
   */
  fold?: Bitmap;
}

/**
 * What the sender needs from the destination of one volume. Calls for one volume come from
 * one sender at a time, in this order per generation: `resumeInfo`, `beginGeneration`, then
 * `stage` and `flush` any number of times, then `commit`.
 */
export interface Destination {
  /** Committed generation and what is durably staged of the next. Safe to call any time. */
  resumeInfo(): Promise<ResumeInfo> | ResumeInfo;
  /**
   * Starts staging `generation` (the committed one + 1) with the block set `dirty`. For the
   * same generation and set it resumes, keeping what is staged: safe to repeat after a retry.
   * With `options.fold`, see {@linkcode BeginOptions.fold}.
   */
  beginGeneration(
    generation: number,
    dirty: Bitmap,
    cutTimeMs: number,
    options?: BeginOptions,
  ): Promise<void>;
  /** Verifies and appends blocks; not durable until `flush`. Blocks staged twice are ignored. */
  stage(blocks: StagedBlock[]): Promise<StageResult>;
  /**
   * The bytes `stage` puts out for `block` before compression (a patch's changed pages, a
   * zero marker's header): what resending it would cost. The sender's acknowledgement points
   * are spaced by it. Absent: the block's length.
   */
  sendBytes?(block: StagedBlock): number;
  /**
   * Makes staged blocks durable: after it resolves they count as acknowledged, except those
   * it returns to resend (a destination without patches returns nothing). Idempotent.
   */
  flush(): Promise<FlushResult | void>;
  /**
   * True when `stage` may be called while a `flush` is still in flight (the flush then
   * covers only what was staged before it): a remote destination handles requests in
   * order, so the sender need not wait a round trip at every acknowledgement point.
   */
  readonly concurrentFlush?: boolean;
  /**
   * True when `beginGeneration` takes `options.fold` (a remote destination of sync protocol
   * 4; a local replica). Without it a generation in flight is not folded.
   */
  readonly folds?: boolean;
  /**
   * The page digests (`volume/page_masks.ts`, `pageDigests`) of the committed copies of
   * `blocks` (at most {@linkcode MAX_DIGEST_BLOCKS}), one block after the other; null when
   * this destination takes no patches. For a
   * tracker that knows only whole blocks: the sender compares them with its own to find the
   * changed pages. May be called between `stage` calls; pure, safe to repeat.
   */
  pageDigests?(blocks: number[]): Promise<Uint8Array | null>;
  /**
   * Commits the generation if every block of its set is staged and the resulting Merkle root
   * equals `expectedRoot` (hex); otherwise nothing is applied. Retrying after a lost reply is
   * answered by `resumeInfo` (the generation shows as committed).
   */
  commit(generation: number, expectedRoot: string): Promise<CommittedState>;
}
