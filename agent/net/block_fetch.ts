/**
 * Postcopy fetches (docs/PROTOCOL.md, "Block fetch"): the destination asks the source for
 * blocks of the generation still arriving, on a stream of its own at on-demand priority, so
 * the answers overtake the bulk transfer.
 *
 * @module
 */

import { type Codec, decodeBlockFrame, encodeBlockFrame, ZERO_MARKER_KIND } from "../codec/mod.ts";
import { blake3, isZero } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Cut } from "../tracker.ts";
import { constantTimeEqual } from "../bytes.ts";
import { blockCount, blockLength, type VolumeIdentity } from "../volume/volume_identity.ts";
import { Priority } from "../wire/frame.ts";
import type { Session } from "../wire/session.ts";
import type { SessionStream } from "../wire/session_stream.ts";
import { MessageKind, MessageReader, MessageWriter, parseJsonBody } from "./message_stream.ts";
import {
  errorFromReply,
  errorReply,
  type FetchRequest,
  parseErrorReply,
  parseFetchRequest,
  SyncOp,
} from "./sync_messages.ts";
import { decodeBlockMessage, encodeBlockMessage } from "./sync_protocol.ts";

export { MAX_FETCH_BLOCKS } from "./sync_messages.ts";

/** Largest fetch request accepted (it is a small JSON object). */
const MAX_REQUEST_BYTES = 4096;
const NO_HASH = new Uint8Array(32);

/** One fetched block, checked against its hash. */
export interface FetchedBlock {
  block: number;
  /** The block's bytes (exactly its length; zeros for a zero block). */
  data: Uint8Array;
  /** BLAKE3 of the bytes, or null for a zero block. */
  hash: Uint8Array | null;
}

/** How the source finds the cut a fetch reads from. */
export type CutLookup = (
  volume: string,
  generation: number,
) => { cut: Cut; identity: VolumeIdentity };

/**
 * The source side: answers one fetch stream, reading from the cut of the generation being
 * sent (as of the cut, or the paused VM's current bytes). Errors go back as a JSON reply.
 */
export async function serveFetchStream(
  stream: SessionStream,
  lookup: CutLookup,
  codec: Codec,
): Promise<void> {
  const reader = new MessageReader(stream.readable, MAX_REQUEST_BYTES);
  const writer = new MessageWriter(stream.writable);
  try {
    const message = await reader.read();
    if (!message || message.kind !== MessageKind.JSON) {
      throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "a fetch stream must start with fetch");
    }
    const request = parseFetchRequest(parseJsonBody(message.body));
    const { cut, identity } = lookup(request.volume, request.generation);
    if (request.first + request.count > blockCount(identity)) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `fetch of blocks ${request.first}+${request.count} goes past the end of volume ` +
          `${request.volume} (${blockCount(identity)} blocks)`,
      );
    }
    const data = await cut.read(request.first, request.count);
    const { blockSize } = identity;
    for (let i = 0; i < request.count; i++) {
      const bytes = data.subarray(i * blockSize, (i + 1) * blockSize);
      const zero = isZero(bytes);
      const frame = encodeBlockFrame(bytes, codec, { isZero: () => zero });
      await writer.write(
        MessageKind.BLOCK,
        encodeBlockMessage(request.first + i, zero ? NO_HASH : blake3(bytes), frame),
      );
    }
  } catch (err) {
    await writer.writeJson(errorReply(err)).catch(() => {});
  } finally {
    await writer.close();
    await reader.cancel();
  }
}

/**
 * The destination side: fetches `count` blocks from `first` over a new on-demand stream of
 * `session`, and checks each against the hash the source sent (and its length).
 */
export async function fetchBlocks(
  session: Session,
  identity: VolumeIdentity,
  generation: number,
  first: number,
  count: number,
  codecs: Codec[],
): Promise<FetchedBlock[]> {
  const stream = session.openStream(Priority.ON_DEMAND);
  const { blockSize } = identity;
  const reader = new MessageReader(stream.readable, blockSize + 64 * 1024);
  const writer = new MessageWriter(stream.writable);
  try {
    const request: FetchRequest = {
      op: SyncOp.FETCH,
      volume: identity.name,
      generation,
      first,
      count,
    };
    await writer.writeJson(request);
    await writer.close();
    const blocks: FetchedBlock[] = [];
    for (let i = 0; i < count; i++) {
      const message = await reader.read();
      if (!message) {
        throw new PresyncError(
          ErrorCode.CONNECTION_LOST,
          "source ended the fetch stream early",
          { retryable: true },
        );
      }
      if (message.kind === MessageKind.JSON) {
        throw errorFromReply(parseErrorReply(parseJsonBody(message.body)), "source");
      }
      blocks.push(checkBlock(decodeBlockMessage(message.body), first + i, identity, codecs));
    }
    return blocks;
  } catch (err) {
    stream.reset();
    throw err;
  } finally {
    await reader.cancel();
  }
}

function checkBlock(
  message: { block: number; hash: Uint8Array; frame: Uint8Array },
  expected: number,
  identity: VolumeIdentity,
  codecs: Codec[],
): FetchedBlock {
  const length = blockLength(identity, expected);
  const bad = (why: string) =>
    new PresyncError(ErrorCode.BLOCK_HASH_MISMATCH, `fetched block ${expected}: ${why}`, {
      retryable: true,
    });
  if (message.block !== expected) throw bad(`the source sent block ${message.block} instead`);
  const raw = decodeBlockFrame(message.frame, { maxRawLength: identity.blockSize, codecs });
  if (raw.length !== length) throw bad(`${raw.length} bytes instead of ${length}`);
  if (message.frame[0] === ZERO_MARKER_KIND) return { block: expected, data: raw, hash: null };
  if (!constantTimeEqual(blake3(raw), message.hash)) throw bad("its bytes do not match its hash");
  return { block: expected, data: raw.slice(), hash: message.hash.slice() };
}
