/**
 * Pure encoders and decoders of transmission replies: simple replies and structured reply
 * chunks (data, error, block status).
 *
 * @module
 */

import {
  CHUNK_HEADER_BYTES,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  SIMPLE_REPLY_BYTES,
} from "./nbd_constants.ts";

/** One block-status descriptor: `lengthBytes` bytes with status `flags`. */
export interface StatusExtent {
  lengthBytes: number;
  flags: number;
}

/** A decoded reply header (client side). */
export type ReplyHeader =
  | { kind: "simple"; error: number; cookie: bigint }
  | { kind: "chunk"; flags: number; type: number; cookie: bigint; length: number }
  | { kind: "bad"; magic: number };

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A simple reply header; a successful READ's data follows it. */
export function encodeSimpleReply(cookie: bigint, error: number): Uint8Array {
  const out = new Uint8Array(SIMPLE_REPLY_BYTES);
  const v = view(out);
  v.setUint32(0, NBD_SIMPLE_REPLY_MAGIC);
  v.setUint32(4, error);
  v.setBigUint64(8, cookie);
  return out;
}

/** A structured chunk header for a payload of `length` bytes. */
export function encodeChunkHeader(
  cookie: bigint,
  flags: number,
  type: number,
  length: number,
): Uint8Array {
  const out = new Uint8Array(CHUNK_HEADER_BYTES);
  const v = view(out);
  v.setUint32(0, NBD_STRUCTURED_REPLY_MAGIC);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  v.setBigUint64(8, cookie);
  v.setUint32(16, length);
  return out;
}

/** Bytes of the head of an `OFFSET_DATA` chunk (chunk header, then the offset). */
export const DATA_CHUNK_HEAD_BYTES = CHUNK_HEADER_BYTES + 8;

/** The header and offset of an `OFFSET_DATA` chunk carrying `dataLength` bytes at `offset`. */
export function encodeDataChunkHead(
  cookie: bigint,
  offset: bigint,
  dataLength: number,
  done: boolean,
): Uint8Array {
  return writeDataChunkHead(
    new Uint8Array(DATA_CHUNK_HEAD_BYTES),
    cookie,
    offset,
    dataLength,
    done,
  );
}

/**
 * Writes the head of an `OFFSET_DATA` chunk into the first {@linkcode DATA_CHUNK_HEAD_BYTES}
 * of `out` (a reply buffer the data follows in); returns `out`.
 */
export function writeDataChunkHead(
  out: Uint8Array,
  cookie: bigint,
  offset: bigint,
  dataLength: number,
  done: boolean,
): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, DATA_CHUNK_HEAD_BYTES);
  v.setUint32(0, NBD_STRUCTURED_REPLY_MAGIC);
  v.setUint16(4, done ? NBD_REPLY_FLAG_DONE : 0);
  v.setUint16(6, NBD_REPLY_TYPE_OFFSET_DATA);
  v.setBigUint64(8, cookie);
  v.setUint32(16, 8 + dataLength);
  v.setBigUint64(CHUNK_HEADER_BYTES, offset);
  return out;
}

/** A final `NBD_REPLY_TYPE_ERROR` chunk with a human-readable message (cut to 4096 bytes). */
export function encodeErrorChunk(cookie: bigint, error: number, message: string): Uint8Array {
  const text = new TextEncoder().encode(message).subarray(0, 4096);
  const out = new Uint8Array(CHUNK_HEADER_BYTES + 6 + text.length);
  out.set(encodeChunkHeader(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + text.length));
  const v = view(out);
  v.setUint32(CHUNK_HEADER_BYTES, error);
  v.setUint16(CHUNK_HEADER_BYTES + 4, text.length);
  out.set(text, CHUNK_HEADER_BYTES + 6);
  return out;
}

/** A `BLOCK_STATUS` chunk for one metadata context. */
export function encodeBlockStatusChunk(
  cookie: bigint,
  contextId: number,
  extents: StatusExtent[],
  done: boolean,
): Uint8Array {
  const length = 4 + 8 * extents.length;
  const out = new Uint8Array(CHUNK_HEADER_BYTES + length);
  out.set(
    encodeChunkHeader(cookie, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_BLOCK_STATUS, length),
  );
  const v = view(out);
  v.setUint32(CHUNK_HEADER_BYTES, contextId);
  extents.forEach((e, i) => {
    v.setUint32(CHUNK_HEADER_BYTES + 4 + 8 * i, e.lengthBytes);
    v.setUint32(CHUNK_HEADER_BYTES + 8 + 8 * i, e.flags);
  });
  return out;
}

/** Decodes a reply header from its first 4 bytes (the magic) plus the rest. */
export function decodeReplyHeader(bytes: Uint8Array): ReplyHeader {
  const v = view(bytes);
  const magic = v.getUint32(0);
  if (magic === NBD_SIMPLE_REPLY_MAGIC && bytes.length >= SIMPLE_REPLY_BYTES) {
    return { kind: "simple", error: v.getUint32(4), cookie: v.getBigUint64(8) };
  }
  if (magic === NBD_STRUCTURED_REPLY_MAGIC && bytes.length >= CHUNK_HEADER_BYTES) {
    return {
      kind: "chunk",
      flags: v.getUint16(4),
      type: v.getUint16(6),
      cookie: v.getBigUint64(8),
      length: v.getUint32(16),
    };
  }
  return { kind: "bad", magic };
}

/** Decodes a `BLOCK_STATUS` chunk payload; null when malformed. */
export function decodeBlockStatus(
  payload: Uint8Array,
): { contextId: number; extents: StatusExtent[] } | null {
  if (payload.length < 12 || (payload.length - 4) % 8 !== 0) return null;
  const v = view(payload);
  const extents: StatusExtent[] = [];
  for (let at = 4; at < payload.length; at += 8) {
    const lengthBytes = v.getUint32(at);
    if (lengthBytes === 0) return null;
    extents.push({ lengthBytes, flags: v.getUint32(at + 4) });
  }
  return { contextId: v.getUint32(0), extents };
}
