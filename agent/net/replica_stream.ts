import { counters } from "../daemon/counters.ts";
import { type Codec, decodeBlockFrame, maxPatchLength, ZERO_MARKER_KIND } from "../codec/mod.ts";
import type { Bitmap } from "../core/mod.ts";
import { concatBytes } from "../bytes.ts";
import { pageDigests } from "../volume/page_masks.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type {
  CommittedState,
  ResumeInfo,
  StagedBlock,
  StagedPatch,
  StageResult,
} from "../sync/destination.ts";
import { blockCount, type VolumeIdentity } from "../volume/volume_identity.ts";
import {
  MESSAGE_HEADER_BYTES,
  MessageKind,
  type MessageReader,
  type MessageWriter,
} from "./message_stream.ts";
import { parseJsonBody } from "./message_stream.ts";
import {
  errorReply,
  parseSyncRequest,
  type ReplicaCheck,
  SyncOp,
  type SyncReply,
  type SyncRequest,
} from "./sync_messages.ts";
import { bitmapFromWire, bytesToWire, decodeBlockMessage, resumeToWire } from "./sync_protocol.ts";

/** Blocks staged per batch on the destination. */
const STAGE_BATCH = 64;

/** What a sync stream needs of the replica it serves (a `ReplicaVolume` of the store). */
export interface ServedReplica {
  readonly identity: VolumeIdentity;
  readonly meta: CommittedState;
  resumeInfo(): ResumeInfo;
  beginGeneration(
    generation: number,
    dirty: Bitmap,
    cutTimeMs: number,
    options?: { fold?: Bitmap },
  ): Promise<void>;
  /** Stages blocks, and patches laid over the replica's copy (see `StagingArea.stage`). */
  stage(blocks: (StagedBlock | StagedPatch)[]): Promise<StageResult>;
  flush(): Promise<void>;
  commit(generation: number, expectedRoot: string): Promise<CommittedState>;
  verify(options: { expectedRoot?: string; rootOnly?: boolean }): Promise<ReplicaCheck>;
  readStaged(generation: number, block: number): Promise<Uint8Array | null>;
  /**
   * The copy a patch of `block` is laid over, which page digests describe: the committed
   * one, or, for a block a fold re-dirtied, its copy staged before the fold when at hand.
   */
  readPatchBase(block: number): Promise<Uint8Array>;
  close(): void;
}

/** What the stream tells the server, and asks it, beyond the replica. */
export interface ReplicaStreamHooks {
  /**
   * Before a `begin` is carried out; throws to refuse it (the export lock).
   */
  beforeBegin(generation: number, dirty: Bitmap): void;
  /** After a `begin` that says it is an evacuation's final generation. */
  finalBegun(generation: number, dirty: Bitmap): void;
  /** After each commit, with the replica's committed state. */
  committed(meta: CommittedState): void;
  /** Counts the bytes of each message received. */
  received(bytes: number): void;
  /** The source agreed to send patches in `open` (PATCH messages are allowed). */
  patches: boolean;
  /** The source agreed to folds in `open` (`begin.fold` is taken). */
  folds?: boolean;
}

/**
 * Serves the requests and blocks of one opened sync stream against its replica, in order,
 * until the stream ends: BLOCK messages are decoded (bounded by the block size), checked
 * against their hash and staged in batches (a block that fails is reported in the next flush
 * reply); a PATCH (when agreed) goes to the store, which lays it over its copy of the block
 * and stages it only if the result has the source's hash; else it is named in the next flush
 * reply's `resend`; each JSON request is validated, then answered. When the stream ends, for
 * any reason, what arrived is staged and flushed: a link cut costs only the bytes in flight.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` for a message that breaks the protocol (the
 *   caller reports it on the stream and ends it); the stream's own error
 */
export async function serveReplicaStream(
  replica: ServedReplica,
  reader: MessageReader,
  writer: MessageWriter,
  codecs: Codec[],
  log: Logger,
  hooks: ReplicaStreamHooks,
): Promise<void> {
  const { blockSize, name } = replica.identity;
  const blocks = blockCount(replica.identity);
  const batch: (StagedBlock | StagedPatch)[] = [];
  const rejected: number[] = [];
  const resend: number[] = [];
  const stageBatch = async () => {
    if (batch.length === 0) return;
    const result = await replica.stage(batch.splice(0));
    rejected.push(...result.rejected);
    for (const block of result.resend ?? []) {
      // Our copy is not what the source patched: nothing staged, the source sends it whole.
      log("warn", "patch_base_differs", { volume: name, block });
      resend.push(block);
    }
  };
  const answer = async (request: SyncRequest): Promise<SyncReply> => {
    switch (request.op) {
      case SyncOp.RESUME:
        return { ok: true, resume: resumeToWire(replica.resumeInfo()) };
      case SyncOp.BEGIN: {
        using dirty = bitmapFromWire(request.dirty, blocks);
        hooks.beforeBegin(request.generation, dirty);
        using fold = request.fold !== undefined && hooks.folds
          ? bitmapFromWire(request.fold, blocks)
          : null;
        await replica.beginGeneration(
          request.generation,
          dirty,
          request.cutTimeMs,
          fold ? { fold } : {},
        );
        if (request.final) hooks.finalBegun(request.generation, dirty);
        return { ok: true };
      }
      case SyncOp.FLUSH:
        await replica.flush();
        return {
          ok: true,
          seq: request.seq,
          rejected: rejected.splice(0),
          resend: resend.splice(0),
        };
      case SyncOp.COMMIT: {
        const meta = await counters.timeCommit(
          name,
          () => replica.commit(request.generation, request.merkleRoot),
        );
        log("info", "generation_committed", {
          volume: name,
          generation: meta.committedGeneration,
        });
        hooks.committed(meta);
        return {
          ok: true,
          meta: {
            committedGeneration: meta.committedGeneration,
            merkleRoot: meta.merkleRoot,
            cutTimeMs: meta.cutTimeMs,
          },
        };
      }
      case SyncOp.PAGES: {
        const parts: Uint8Array[] = [];
        for (const block of request.blocks) {
          if (block >= blocks) {
            throw new PresyncError(
              ErrorCode.PROTOCOL_VIOLATION,
              `pages of block ${block} asked for, past the end of volume ${name} (${blocks} blocks)`,
            );
          }
          parts.push(pageDigests(await replica.readPatchBase(block)));
        }
        return { ok: true, digests: bytesToWire(concatBytes(parts)) };
      }
      case SyncOp.VERIFY: {
        const report = await replica.verify({
          expectedRoot: request.merkleRoot,
          rootOnly: request.rootOnly === true,
        });
        return { ok: true, generation: replica.meta.committedGeneration, report };
      }
    }
  };
  try {
    while (true) {
      const message = await reader.read();
      if (!message) return;
      hooks.received(message.body.length + MESSAGE_HEADER_BYTES);
      counters.received(name, message.body.length + MESSAGE_HEADER_BYTES);
      if (message.kind === MessageKind.BLOCK) {
        const { block, hash, frame } = decodeBlockMessage(message.body);
        if (block >= blocks) {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            `block ${block} is past the end of volume ${name} (${blocks} blocks)`,
          );
        }
        let data: Uint8Array;
        try {
          data = decodeBlockFrame(frame, { maxRawLength: blockSize, codecs });
        } catch (err) {
          // A corrupt frame is as good as a corrupt block: ask for it again.
          log("warn", "block_frame_rejected", { volume: name, block, error: String(err) });
          rejected.push(block);
          continue;
        }
        // No copy of the block: a raw block is a view into the bytes received (a compressed
        // one a new array), which nothing else holds or reuses, kept only until its batch is
        // staged; the hash is copied so a small compressed block does not keep them alive.
        batch.push(
          frame[0] === ZERO_MARKER_KIND
            ? { block, data: null }
            : { block, data, hash: hash.slice() },
        );
        counters.blockReceived(name);
        if (batch.length >= STAGE_BATCH) await stageBatch();
        continue;
      }
      if (message.kind === MessageKind.PATCH && hooks.patches) {
        const { block, hash, frame } = decodeBlockMessage(message.body);
        if (block >= blocks) {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            `patch of block ${block} is past the end of volume ${name} (${blocks} blocks)`,
          );
        }
        let patch: Uint8Array;
        try {
          patch = decodeBlockFrame(frame, { maxRawLength: maxPatchLength(blockSize), codecs });
        } catch (err) {
          // A corrupt patch is as good as a corrupt block: ask for it again.
          log("warn", "block_frame_rejected", { volume: name, block, error: String(err) });
          rejected.push(block);
          continue;
        }
        batch.push({ block, patch, hash: hash.slice() });
        counters.blockReceived(name);
        if (batch.length >= STAGE_BATCH) await stageBatch();
        continue;
      }
      if (message.kind !== MessageKind.JSON) {
        throw new PresyncError(
          ErrorCode.PROTOCOL_VIOLATION,
          `unknown sync message kind ${message.kind}`,
        );
      }
      const request = parseSyncRequest(parseJsonBody(message.body));
      try {
        await stageBatch();
        await writer.writeJson(await answer(request));
      } catch (err) {
        if (err instanceof PresyncError && err.code === ErrorCode.PROTOCOL_VIOLATION) throw err;
        counters.error(err);
        await writer.writeJson(errorReply(err));
      }
    }
  } finally {
    // The link went away: keep what arrived intact. Blocks staged so far are verified;
    // making them durable now means the source will not send them again. (With nothing
    // staged there is nothing to flush: the stream's own error is what counts.)
    try {
      await stageBatch();
      await replica.flush();
    } catch {
      // Reported by the next stream's resume state: what is not durable is sent again.
    }
  }
}
