import { type Codec, encodeBlockFrame } from "../codec/mod.ts";
import { Bitmap, isZero } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { RateLimiter, throttle } from "../rate_limiter.ts";
import type { ReplicaMeta, ResumeInfo } from "../store/replica_volume.ts";
import type { StagedBlock, StageResult } from "../store/staging_area.ts";
import type { Destination } from "../sync/destination.ts";
import { blockCount, type VolumeIdentity } from "../volume/volume_identity.ts";
import type { SessionStream } from "../wire/session_stream.ts";
import { YIELD_EVERY_BYTES, yieldToEventLoop } from "../yield.ts";
import {
  type Message,
  MessageKind,
  MessageReader,
  MessageWriter,
  parseJsonBody,
} from "./message_stream.ts";
import {
  bitmapFromWire,
  bitmapToWire,
  encodeBlockMessage,
  errorFromReply,
  MAX_SYNC_MESSAGE_BYTES,
  type WireResume,
} from "./sync_protocol.ts";

const NO_HASH = new Uint8Array(32);

/** Transfer counters of one remote destination. */
export interface TransferCounters {
  /** Block bytes handed to stage (uncompressed). */
  rawBytes: number;
  /** Bytes written to the session (frames and headers). */
  wireBytes: number;
  /** Duration of the last commit request, ms. */
  lastCommitMs: number;
}

/**
 * A replica on the other side of a session, as a {@linkcode Destination}: the sender moves
 * exactly the blocks it would move to a local replica. Blocks are written without waiting
 * for replies (backpressure comes from the session's flow control); `flush` waits for the
 * destination to make them durable and acknowledge them.
 */
export class RemoteDestination implements Destination {
  readonly concurrentFlush = true;
  readonly #identity: VolumeIdentity;
  readonly #codec: Codec;
  readonly #reader: MessageReader;
  readonly #writer: MessageWriter;
  readonly #replies: {
    resolve: (m: Record<string, unknown>) => void;
    reject: (e: unknown) => void;
  }[] = [];
  #failure: unknown = null;
  #seq = 0;
  /** Bytes per second on the wire; adjusted by the agent (schedule, delay control, evacuate). */
  readonly limiter: RateLimiter;
  /** Counters, shared by the caller across reconnects. */
  readonly counters: TransferCounters;
  /** Called before each block is sent; resolves when sending may go on (pause). */
  gate: () => Promise<void> = () => Promise.resolve();
  /**
   * The final generation of an evacuation, when one is being sent: its `begin` says so, and
   * the destination may then serve it to a VM before it is complete (postcopy).
   */
  finalGeneration: number | null = null;

  private constructor(
    stream: SessionStream,
    identity: VolumeIdentity,
    codec: Codec,
    limiter: RateLimiter,
    counters: TransferCounters,
  ) {
    this.counters = counters;
    this.#identity = identity;
    this.#codec = codec;
    this.limiter = limiter;
    this.#reader = new MessageReader(stream.readable, MAX_SYNC_MESSAGE_BYTES);
    this.#writer = new MessageWriter(stream.writable);
    this.#readReplies();
  }

  /**
   * Opens volume `identity` on a sync stream: the destination creates the replica when it is
   * new, or checks it is the same volume. Returns the destination and its resume state.
   */
  static async open(
    stream: SessionStream,
    identity: VolumeIdentity,
    codec: Codec,
    limiter: RateLimiter,
    counters: TransferCounters = { rawBytes: 0, wireBytes: 0, lastCommitMs: 0 },
  ): Promise<{ destination: RemoteDestination; resume: WireResume }> {
    const destination = new RemoteDestination(stream, identity, codec, limiter, counters);
    const reply = await destination.#request({ op: "open", volume: identity.name, identity });
    return { destination, resume: reply.resume as WireResume };
  }

  async #readReplies(): Promise<void> {
    try {
      while (true) {
        const message: Message | null = await this.#reader.read();
        if (!message) {
          throw new PresyncError(ErrorCode.CONNECTION_LOST, "destination closed the sync stream", {
            retryable: true,
          });
        }
        if (message.kind !== MessageKind.JSON) {
          throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "destination sent a non-JSON reply");
        }
        const waiter = this.#replies.shift();
        if (!waiter) {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            "destination sent an unexpected reply",
          );
        }
        waiter.resolve(parseJsonBody(message.body));
      }
    } catch (err) {
      this.#failure = err;
      for (const waiter of this.#replies.splice(0)) waiter.reject(err);
    }
  }

  async #request(request: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.#failure) throw this.#failure;
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => {
      this.#replies.push({ resolve, reject });
    });
    // If the write below fails, nobody awaits the reply: it must not count as unhandled.
    reply.catch(() => {});
    await this.#writer.writeJson(request);
    const answer = await reply;
    if (answer.ok !== true) throw errorFromReply(answer);
    return answer;
  }

  async resumeInfo(): Promise<ResumeInfo> {
    const reply = await this.#request({ op: "resume" });
    return resumeFromWire(reply.resume as WireResume, this.#identity);
  }

  async beginGeneration(generation: number, dirty: Bitmap, cutTimeMs: number): Promise<void> {
    await this.#request({
      op: "begin",
      generation,
      cutTimeMs,
      dirty: bitmapToWire(dirty),
      final: generation === this.finalGeneration,
    });
  }

  async stage(blocks: StagedBlock[]): Promise<StageResult> {
    if (this.#failure) throw this.#failure;
    let encoded = 0;
    for (const { block, data, hash } of blocks) {
      await this.gate();
      if ((encoded += data?.length ?? 0) >= YIELD_EVERY_BYTES) {
        // Compression is CPU work: let an NBD server in this process answer between pieces.
        encoded = 0;
        await yieldToEventLoop();
      }
      const frame = data === null
        ? encodeBlockFrame(new Uint8Array(0), this.#codec, { isZero: () => true })
        : encodeBlockFrame(data, this.#codec, { isZero });
      const body = encodeBlockMessage(block, data === null ? NO_HASH : hash!, frame);
      await throttle(this.limiter, body.length);
      await this.#writer.write(MessageKind.BLOCK, body);
      this.counters.rawBytes += data?.length ?? 0;
      this.counters.wireBytes += body.length + 5;
    }
    return { staged: blocks.length, duplicates: 0, rejected: [] };
  }

  async flush(): Promise<void> {
    const reply = await this.#request({ op: "flush", seq: ++this.#seq });
    const rejected = reply.rejected as number[];
    if (rejected.length > 0) {
      throw new PresyncError(
        ErrorCode.BLOCK_HASH_MISMATCH,
        `destination rejected ${rejected.length} blocks as corrupt in transit (first: ${
          rejected[0]
        }); they will be sent again`,
        { retryable: true },
      );
    }
  }

  async commit(generation: number, expectedRoot: string): Promise<ReplicaMeta> {
    const started = performance.now();
    const reply = await this.#request({ op: "commit", generation, merkleRoot: expectedRoot });
    this.counters.lastCommitMs = performance.now() - started;
    const meta = reply.meta as ReplicaMeta;
    return { ...meta, identity: this.#identity, committedAtMs: Date.now() };
  }

  /**
   * Asks the destination to verify its replica against `merkleRoot`; with `rootOnly`, only
   * the root (the image is not re-read: for evacuations, where time counts).
   */
  async verify(merkleRoot?: string, rootOnly = false): Promise<Record<string, unknown>> {
    return await this.#request({ op: "verify", merkleRoot, rootOnly });
  }

  /** Ends the stream. */
  async close(): Promise<void> {
    await this.#writer.close();
    await this.#reader.cancel();
  }
}

/** The resume state from the wire, with its bitmap decoded. */
export function resumeFromWire(resume: WireResume, identity: VolumeIdentity): ResumeInfo {
  return {
    identity,
    committedGeneration: resume.committedGeneration,
    merkleRoot: resume.merkleRoot,
    cutTimeMs: resume.cutTimeMs,
    staged: resume.staged
      ? {
        generation: resume.staged.generation,
        received: bitmapFromWire(resume.staged.received, blockCount(identity)),
      }
      : null,
  };
}
