import type { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { CommittedState, ResumeInfo } from "../sync/destination.ts";
import { PAGE_DIGEST_BYTES, pagesIn } from "../volume/page_masks.ts";
import { blockCount, blockLength, type VolumeIdentity } from "../volume/volume_identity.ts";
import type { SessionStream } from "../wire/session_stream.ts";
import {
  MESSAGE_HEADER_BYTES,
  MessageKind,
  MessageReader,
  MessageWriter,
  parseJsonBody,
} from "./message_stream.ts";
import {
  errorFromReply,
  parseErrorReply,
  parseReply,
  type SourceInstance,
  SyncOp,
  type SyncReplies,
  type VerifyReply,
} from "./sync_messages.ts";
import {
  bitmapToWire,
  encodeBlockMessage,
  MAX_SYNC_MESSAGE_BYTES,
  resumeFromWire,
} from "./sync_protocol.ts";

const NO_HASH = new Uint8Array(32);

/** A request waiting for its reply (replies come in request order). */
interface Waiter {
  op: keyof SyncReplies;
  resolve: (reply: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * The sync protocol's source side on one stream, as a plain adapter: one method per message
 * (docs/PROTOCOL.md, "Sync protocol"), every reply validated before it is returned. It
 * carries no policy: what to send, how fast, compressed how, is the sender's business.
 * Blocks are written without waiting for replies (backpressure comes from the session's
 * flow control); requests are answered in order.
 *
 * Once the stream fails, every call fails with the same error: a link error, a malformed
 * reply (`PROTOCOL_VIOLATION`), or the error the destination reported before it ended the
 * stream.
 */
export class RemoteDestination {
  readonly #identity: VolumeIdentity;
  readonly #reader: MessageReader;
  readonly #writer: MessageWriter;
  readonly #waiters: Waiter[] = [];
  #failure: unknown = null;
  /**
   * The destination's committed state as this stream learned it (the open's answer, a
   * commit's) while nothing was begun since: the volume is held by this source alone, so
   * `resumeInfo` answers from it without a round trip.
   */
  #known: CommittedState | null = null;
  #seq = 0;
  #patches = false;
  #folds = false;

  private constructor(stream: SessionStream, identity: VolumeIdentity) {
    this.#identity = identity;
    this.#reader = new MessageReader(stream.readable, MAX_SYNC_MESSAGE_BYTES);
    this.#writer = new MessageWriter(stream.writable);
    this.#readReplies();
  }

  /**
   * Opens volume `identity` on a sync stream, as `source`: the destination creates the
   * replica when it is new, or checks it is the same volume and that no other live agent
   * holds it. Returns the adapter and the destination's resume state. The `open` offers
   * patches; {@linkcode patches} says whether the destination took the offer.
   *
   * @throws {PresyncError} what the destination refused with (`VOLUME_MISMATCH`,
   *   `VOLUME_HELD`…), a link error, or `PROTOCOL_VIOLATION`
   */
  static async open(
    stream: SessionStream,
    identity: VolumeIdentity,
    source?: SourceInstance,
  ): Promise<{ remote: RemoteDestination; resume: ResumeInfo }> {
    const remote = new RemoteDestination(stream, identity);
    try {
      const reply = await remote.#call({
        op: SyncOp.OPEN,
        volume: identity.name,
        identity,
        source,
        patches: true,
        folds: true,
      });
      remote.#patches = reply.patches === true;
      remote.#folds = reply.folds === true;
      const resume = resumeFromWire(reply.resume, identity);
      if (resume.staged === null) remote.#known = committedPart(resume);
      return { remote, resume };
    } catch (err) {
      await remote.close();
      throw err;
    }
  }

  async #readReplies(): Promise<void> {
    // The error the destination replied with last, until a success: when the stream ends
    // right after it, that error is why (its last word, e.g. a full disk while staging).
    let lastWord: PresyncError | null = null;
    try {
      while (true) {
        const message = await this.#reader.read();
        if (!message) {
          throw lastWord ??
            new PresyncError(ErrorCode.CONNECTION_LOST, "destination closed the sync stream", {
              retryable: true,
            });
        }
        if (message.kind !== MessageKind.JSON) {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            `destination sent a message of kind ${message.kind} on a sync stream (only JSON ` +
              `replies come back)`,
          );
        }
        const value = parseJsonBody(message.body);
        const waiter = this.#waiters.shift();
        if (!waiter) {
          // The destination's last word before it ends the stream (e.g. a full disk while
          // staging blocks): the reason every later call fails with.
          throw errorFromReply(parseErrorReply(value));
        }
        try {
          waiter.resolve(parseReply(waiter.op, value));
          lastWord = null;
        } catch (err) {
          waiter.reject(err);
          if (err instanceof PresyncError && err.code === ErrorCode.PROTOCOL_VIOLATION) throw err;
          lastWord = err instanceof PresyncError ? err : null;
        }
      }
    } catch (err) {
      await this.#fail(err);
    }
  }

  /** Fails the stream: every waiting and later call fails with `err`. */
  async #fail(err: unknown): Promise<void> {
    this.#failure ??= err;
    this.#known = null;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#failure);
    await this.#reader.cancel();
  }

  async #call<O extends keyof SyncReplies>(
    request: { op: O } & Record<string, unknown>,
  ): Promise<SyncReplies[O]> {
    if (this.#failure) throw this.#failure;
    const reply = new Promise<SyncReplies[O]>((resolve, reject) => {
      this.#waiters.push({ op: request.op, resolve: resolve as (r: unknown) => void, reject });
    });
    // If the write below fails, nobody awaits the reply: it must not count as unhandled.
    reply.catch(() => {});
    await this.#writer.writeJson(request);
    return await reply;
  }

  /** Whether the destination takes PATCH messages on this stream (it said so in `open`). */
  get patches(): boolean {
    return this.#patches;
  }

  /** Whether the destination agreed in `open` to fold a generation (`begin.fold`). */
  get folds(): boolean {
    return this.#folds;
  }

  /**
   * The destination's resume state now: asked for, unless this stream knows it (nothing
   * begun since the open or the last commit: then nothing is staged).
   */
  async resumeInfo(): Promise<ResumeInfo> {
    if (this.#failure) throw this.#failure;
    if (this.#known) return { identity: this.#identity, ...this.#known, staged: null };
    const reply = await this.#call({ op: SyncOp.RESUME });
    return resumeFromWire(reply.resume, this.#identity);
  }

  /**
   * `begin`: starts (or resumes) staging `generation`; `final` marks an evacuation's last,
   * `fold` the blocks folded into it (sent only when the destination agreed to folds).
   */
  async beginGeneration(
    generation: number,
    dirty: Bitmap,
    cutTimeMs: number,
    final: boolean,
    fold?: Bitmap,
  ): Promise<void> {
    this.#known = null;
    await this.#call({
      op: SyncOp.BEGIN,
      generation,
      cutTimeMs,
      dirty: bitmapToWire(dirty),
      final,
      ...(fold && this.#folds ? { fold: bitmapToWire(fold) } : {}),
    });
  }

  /**
   * Writes one BLOCK message: block `block` as the block frame `frame`, with its BLAKE3
   * `hash` (null for a zero marker). Resolves once the stream took it; returns the bytes it
   * put on the stream.
   */
  async sendBlock(block: number, hash: Uint8Array | null, frame: Uint8Array): Promise<number> {
    if (this.#failure) throw this.#failure;
    const body = encodeBlockMessage(block, hash ?? NO_HASH, frame);
    await this.#writer.write(MessageKind.BLOCK, body);
    return body.length + MESSAGE_HEADER_BYTES;
  }

  /**
   * Writes one PATCH message: the changed runs of block `block` as the block frame `frame`
   * of a block patch, with the BLAKE3 `hash` of the whole new block. Only when
   * {@linkcode patches}; returns the bytes it put on the stream.
   */
  async sendPatch(block: number, hash: Uint8Array, frame: Uint8Array): Promise<number> {
    if (this.#failure) throw this.#failure;
    if (!this.#patches) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `the destination of ${this.#identity.name} did not agree to patches: send blocks whole`,
      );
    }
    const body = encodeBlockMessage(block, hash, frame);
    await this.#writer.write(MessageKind.PATCH, body);
    return body.length + MESSAGE_HEADER_BYTES;
  }

  /**
   * `flush`: everything sent before it is durable at the destination once it resolves.
   * Returns the blocks the destination refused (corrupt in transit), to be sent again, and
   * the patched blocks it could not rebuild (its copy differs), to be sent whole.
   */
  async flush(): Promise<{ rejected: number[]; resend: number[] }> {
    const seq = ++this.#seq;
    const reply = await this.#call({ op: SyncOp.FLUSH, seq });
    const blocks = blockCount(this.#identity);
    if (
      reply.seq !== seq || reply.rejected.some((b) => b >= blocks) ||
      reply.resend.some((b) => b >= blocks)
    ) {
      // Out of step with the destination: nothing more on this stream can be trusted.
      const error = new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `reply to flush ${seq}: expected seq ${seq} and blocks below ${blocks}, received seq ` +
          `${reply.seq}, ${reply.rejected.length} rejected and ${reply.resend.length} to resend`,
      );
      await this.#fail(error);
      throw error;
    }
    return { rejected: reply.rejected, resend: reply.resend };
  }

  /** `commit`: the destination's committed state after it, as it reported it. */
  async commit(generation: number, merkleRoot: string): Promise<CommittedState> {
    const reply = await this.#call({ op: SyncOp.COMMIT, generation, merkleRoot });
    if (!this.#failure) this.#known = committedPart(reply.meta);
    return reply.meta;
  }

  /**
   * `verify`: the destination checks its replica against `merkleRoot`; with `rootOnly`, only
   * the root (the image is not re-read: for evacuations, where time counts).
   */
  async verify(merkleRoot?: string, rootOnly = false): Promise<VerifyReply> {
    return await this.#call({ op: SyncOp.VERIFY, merkleRoot, rootOnly });
  }

  /**
   * `pages`: the page digests (`volume/page_masks.ts`, `pageDigests`) of the destination's
   * committed copies of `blocks`, one block after the other.
   *
   * @throws {PresyncError} `PROTOCOL_VIOLATION` when the reply does not hold exactly the
   *   digests of those blocks' pages
   */
  async pageDigests(blocks: number[]): Promise<Uint8Array> {
    const reply = await this.#call({ op: SyncOp.PAGES, blocks });
    const expected = blocks.reduce(
      (n, b) => n + pagesIn(blockLength(this.#identity, b)) * PAGE_DIGEST_BYTES,
      0,
    );
    let digests: Uint8Array | null = null;
    try {
      digests = Uint8Array.from(atob(reply.digests), (c) => c.charCodeAt(0));
    } catch {
      // Reported below, like a wrong length.
    }
    if (!digests || digests.length !== expected) {
      const error = new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `reply to pages: expected ${expected} bytes of page digests in base64, received ` +
          `${digests ? digests.length + " bytes" : "no valid base64"}`,
      );
      await this.#fail(error);
      throw error;
    }
    return digests;
  }

  /** Ends the stream. Never throws. */
  async close(): Promise<void> {
    await this.#writer.close();
    await this.#reader.cancel();
  }
}

/** The committed part of a replica's state. */
function committedPart(state: CommittedState): CommittedState {
  return {
    committedGeneration: state.committedGeneration,
    merkleRoot: state.merkleRoot,
    cutTimeMs: state.cutTimeMs,
  };
}
