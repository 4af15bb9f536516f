/**
 * The binary parts of the sync protocol (docs/PROTOCOL.md, "Sync protocol"): BLOCK message
 * bodies, serialized bitmaps inside JSON messages, and the resume state's wire form. The
 * JSON ops and replies are in `sync_messages.ts`.
 *
 * @module
 */

import { Bitmap, HASH_BYTES } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { ResumeInfo } from "../sync/destination.ts";
import { blockCount, type VolumeIdentity } from "../volume/volume_identity.ts";
import type { WireResume } from "./sync_messages.ts";

// The control endpoint reports errors in the sync protocol's error-reply shape.
export { errorFromReply, errorReply } from "./sync_messages.ts";

/** Largest sync message body accepted: a serialized bitmap of 2^27 blocks in base64. */
export const MAX_SYNC_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Bytes before the block frame in a BLOCK message: u32 block number, 32-byte hash. */
export const BLOCK_MESSAGE_HEADER_BYTES = 4 + HASH_BYTES;

/** Bytes in base64, for a JSON message. */
export function bytesToWire(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return btoa(text);
}

/** Encodes a bitmap for a JSON message. */
export function bitmapToWire(bitmap: Bitmap): string {
  return bytesToWire(bitmap.serialize());
}

/**
 * Decodes a bitmap from a JSON message, bounded by the volume's block count.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` for anything but a base64 bitmap of `blocks`
 *   bits (`BITMAP_MALFORMED` when its encoding is broken)
 */
export function bitmapFromWire(text: unknown, blocks: number): Bitmap {
  if (typeof text !== "string") {
    throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "expected a base64 bitmap");
  }
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch (cause) {
    throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "bitmap is not valid base64", { cause });
  }
  const bitmap = Bitmap.deserialize(bytes, blocks);
  if (bitmap.size !== blocks) {
    bitmap.free();
    throw new PresyncError(
      ErrorCode.PROTOCOL_VIOLATION,
      `bitmap has ${bitmap.size} bits but the volume has ${blocks} blocks`,
    );
  }
  return bitmap;
}

/** The wire form of a replica's resume information (frees its bitmap). */
export function resumeToWire(info: ResumeInfo): WireResume {
  const staged = info.staged
    ? { generation: info.staged.generation, received: bitmapToWire(info.staged.received) }
    : null;
  info.staged?.received.free();
  return {
    committedGeneration: info.committedGeneration,
    merkleRoot: info.merkleRoot,
    cutTimeMs: info.cutTimeMs,
    staged,
  };
}

/** The resume state from the wire, its bitmap decoded and bounded by the volume's blocks. */
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

/** Encodes one BLOCK message body. */
export function encodeBlockMessage(block: number, hash: Uint8Array, frame: Uint8Array): Uint8Array {
  const body = new Uint8Array(BLOCK_MESSAGE_HEADER_BYTES + frame.length);
  new DataView(body.buffer).setUint32(0, block, true);
  body.set(hash, 4);
  body.set(frame, BLOCK_MESSAGE_HEADER_BYTES);
  return body;
}

/** Decodes one BLOCK message body (the views share its bytes). */
export function decodeBlockMessage(
  body: Uint8Array,
): { block: number; hash: Uint8Array; frame: Uint8Array } {
  if (body.length < BLOCK_MESSAGE_HEADER_BYTES) {
    throw new PresyncError(
      ErrorCode.PROTOCOL_VIOLATION,
      `block message of ${body.length} bytes is shorter than its ${BLOCK_MESSAGE_HEADER_BYTES}-byte header`,
    );
  }
  return {
    block: new DataView(body.buffer, body.byteOffset).getUint32(0, true),
    hash: body.subarray(4, BLOCK_MESSAGE_HEADER_BYTES),
    frame: body.subarray(BLOCK_MESSAGE_HEADER_BYTES),
  };
}
