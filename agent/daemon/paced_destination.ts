import { type Codec, encodeBlockFrame, encodePatch, MAX_PATCH_RUNS } from "../codec/mod.ts";
import type { Bitmap } from "../core/mod.ts";
import { isZero } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { MESSAGE_HEADER_BYTES } from "../net/message_stream.ts";
import { BLOCK_MESSAGE_HEADER_BYTES } from "../net/sync_protocol.ts";
import type {
  BeginOptions,
  CommittedState,
  Destination,
  FlushResult,
  ResumeInfo,
  StagedBlock,
  StageResult,
} from "../sync/destination.ts";
import { maskRuns } from "../volume/page_masks.ts";
import { YIELD_EVERY_BYTES, yieldToEventLoop } from "../yield.ts";

/** What {@linkcode PacedDestination} needs of the remote adapter (`net/remote_destination.ts`). */
export interface BlockLink {
  resumeInfo(): Promise<ResumeInfo>;
  beginGeneration(
    generation: number,
    dirty: Bitmap,
    cutTimeMs: number,
    final: boolean,
    fold?: Bitmap,
  ): Promise<void>;
  /** Whether the destination folds a generation (`begin.fold`) on this link. */
  readonly folds?: boolean;
  /** Sends one block frame; resolves once the stream took it, with the bytes it used. */
  sendBlock(block: number, hash: Uint8Array | null, frame: Uint8Array): Promise<number>;
  /** Whether the destination takes patches (`sendPatch`) on this link. */
  readonly patches: boolean;
  /** The page digests of the destination's committed copies of `blocks` (with patches). */
  pageDigests(blocks: number[]): Promise<Uint8Array>;
  /** Sends a block patch's frame with the whole new block's hash; like `sendBlock`. */
  sendPatch(block: number, hash: Uint8Array, frame: Uint8Array): Promise<number>;
  /**
   * Resolves once everything sent before is durable; returns the blocks refused and the
   * patched blocks to send whole.
   */
  flush(): Promise<{ rejected: number[]; resend: number[] }>;
  commit(generation: number, merkleRoot: string): Promise<CommittedState>;
}

/** Bytes a volume moved, cumulative across reconnects. */
export interface TransferCounters {
  /** Block bytes handed to the link (uncompressed; zero blocks count 0). */
  rawBytes: number;
  /** Bytes put on the session (messages with their headers). */
  wireBytes: number;
}

/** The sender's policy for one volume's link. */
export interface SendPolicy {
  /** Compresses each block (a block that does not shrink is sent raw). */
  codec: Codec;
  /**
   * Waits before a block of `wireBytes` goes out: while the volume is paused, and as long as
   * its rate limit says.
   */
  pace(wireBytes: number): Promise<void>;
  /** Counted as blocks go out. */
  counters: TransferCounters;
}

/**
 * A remote destination as the sender sees it: each block is encoded as a block frame with the
 * policy's codec, paced (pause gate, rate limit) and handed to the link, whose replies are
 * checked; `flush` fails (retryable) when the destination refused blocks as corrupt, so they
 * are sent again. A block whose changed pages are known travels as a patch of those pages
 * when the link takes patches; `flush` returns the patched blocks to send whole.
 */
export class PacedDestination implements Destination {
  readonly concurrentFlush = true;
  readonly #link: BlockLink;
  readonly #policy: SendPolicy;

  constructor(link: BlockLink, policy: SendPolicy) {
    this.#link = link;
    this.#policy = policy;
  }

  resumeInfo(): Promise<ResumeInfo> {
    return this.#link.resumeInfo();
  }

  beginGeneration(
    generation: number,
    dirty: Bitmap,
    cutTimeMs: number,
    options: BeginOptions = {},
  ): Promise<void> {
    return this.#link.beginGeneration(
      generation,
      dirty,
      cutTimeMs,
      options.final === true,
      options.fold,
    );
  }

  /** Whether the destination folds a generation on this link. */
  get folds(): boolean {
    return this.#link.folds === true;
  }

  async stage(blocks: StagedBlock[]): Promise<StageResult> {
    const { codec, counters } = this.#policy;
    let encoded = 0;
    for (const { block, data, hash, pages } of blocks) {
      if ((encoded += data?.length ?? 0) >= YIELD_EVERY_BYTES) {
        // Compression is CPU work: let an NBD server in this process answer between pieces.
        encoded = 0;
        await yieldToEventLoop();
      }
      const patch = this.#patchOf(data, pages);
      if (patch !== null) {
        const { runs, bytes: patchBytes } = patch;
        const frame = encodeBlockFrame(encodePatch(data!, runs), codec, { isZero });
        await this.#policy.pace(MESSAGE_HEADER_BYTES + BLOCK_MESSAGE_HEADER_BYTES + frame.length);
        counters.wireBytes += await this.#link.sendPatch(block, hash!, frame);
        counters.rawBytes += patchBytes;
        continue;
      }
      const frame = data === null
        ? encodeBlockFrame(new Uint8Array(0), codec, { isZero: () => true })
        : encodeBlockFrame(data, codec, { isZero });
      await this.#policy.pace(MESSAGE_HEADER_BYTES + BLOCK_MESSAGE_HEADER_BYTES + frame.length);
      counters.wireBytes += await this.#link.sendBlock(block, data === null ? null : hash!, frame);
      counters.rawBytes += data?.length ?? 0;
    }
    return { staged: blocks.length, duplicates: 0, rejected: [] };
  }

  sendBytes({ data, pages }: StagedBlock): number {
    const header = MESSAGE_HEADER_BYTES + BLOCK_MESSAGE_HEADER_BYTES;
    if (data === null) return header;
    return header + (this.#patchOf(data, pages)?.bytes ?? data.length);
  }

  /** The runs of changed pages `data` travels as and their bytes, or null when it goes whole. */
  #patchOf(
    data: Uint8Array | null,
    pages: number | undefined,
  ): { runs: [number, number][]; bytes: number } | null {
    if (data === null || pages === undefined || !this.#link.patches) return null;
    const runs = maskRuns(pages, data.length);
    const bytes = runs.reduce((sum, [, length]) => sum + length, 0);
    return runs.length > 0 && runs.length <= MAX_PATCH_RUNS && bytes < data.length
      ? { runs, bytes }
      : null;
  }

  pageDigests(blocks: number[]): Promise<Uint8Array | null> {
    return this.#link.patches ? this.#link.pageDigests(blocks) : Promise.resolve(null);
  }

  async flush(): Promise<FlushResult> {
    const { rejected, resend } = await this.#link.flush();
    if (rejected.length > 0) {
      throw new PresyncError(
        ErrorCode.BLOCK_HASH_MISMATCH,
        `destination rejected ${rejected.length} blocks as corrupt in transit (first: ${
          rejected[0]
        }); they will be sent again`,
        { retryable: true },
      );
    }
    return { resend };
  }

  commit(generation: number, expectedRoot: string): Promise<CommittedState> {
    return this.#link.commit(generation, expectedRoot);
  }
}
