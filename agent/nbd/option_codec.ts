/**
 * Pure encoders and decoders of the handshake's option haggling (fixed newstyle): option
 * requests, option replies and their payloads. No I/O: the server and the client feed
 * these with bytes they read.
 *
 * @module
 */

import {
  MAX_STRING_BYTES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_OPTS_MAGIC,
  NBD_REP_ERR_INVALID,
  NBD_REP_MAGIC,
  OPTION_HEADER_BYTES,
  OPTION_REPLY_HEADER_BYTES,
} from "./nbd_constants.ts";

/** A decoded value, or the option error reply to send and a message for a human. */
export type Parsed<T> =
  | { ok: true; value: T }
  | { ok: false; error: number; message: string };

/** An option request header. */
export interface OptionHeader {
  /** False when the magic was not `IHAVEOPT` (a protocol violation: hang up). */
  magicOk: boolean;
  option: number;
  /** Length of the option data that follows, bytes. */
  length: number;
}

/** The data of `NBD_OPT_INFO` / `NBD_OPT_GO`. */
export interface ExportRequest {
  name: string;
  /** Information types asked for (`NBD_INFO_*`). */
  infos: number[];
}

/** The data of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

/** An option reply header. */
export interface OptionReplyHeader {
  magicOk: boolean;
  option: number;
  type: number;
  length: number;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function invalid<T>(message: string): Parsed<T> {
  return { ok: false, error: NBD_REP_ERR_INVALID, message };
}

/**
 * Decodes a protocol string: valid UTF-8, no NUL, at most 4096 bytes. Returns null when it
 * breaks any of these rules.
 */
export function decodeNbdString(bytes: Uint8Array): string | null {
  if (bytes.length > MAX_STRING_BYTES || bytes.includes(0)) return null;
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

/** Decodes the 16-byte option request header. */
export function parseOptionHeader(bytes: Uint8Array): OptionHeader {
  const v = view(bytes);
  return {
    magicOk: v.getBigUint64(0) === NBD_OPTS_MAGIC,
    option: v.getUint32(8),
    length: v.getUint32(12),
  };
}

/** Encodes an option request (client side). */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(OPTION_HEADER_BYTES + data.length);
  const v = view(out);
  v.setBigUint64(0, NBD_OPTS_MAGIC);
  v.setUint32(8, option);
  v.setUint32(12, data.length);
  out.set(data, OPTION_HEADER_BYTES);
  return out;
}

/** Decodes the data of `NBD_OPT_INFO` / `NBD_OPT_GO`. */
export function parseExportRequest(data: Uint8Array): Parsed<ExportRequest> {
  if (data.length < 6) return invalid(`option data is ${data.length} bytes, at least 6 expected`);
  const v = view(data);
  const nameLength = v.getUint32(0);
  if (nameLength > data.length - 6) {
    return invalid(`export name length ${nameLength} exceeds the option data`);
  }
  const name = decodeNbdString(data.subarray(4, 4 + nameLength));
  if (name === null) return invalid("export name is not a valid NBD string");
  const count = v.getUint16(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) {
    return invalid(
      `option data is ${data.length} bytes but ${count} information requests need ` +
        `${6 + nameLength + 2 * count}`,
    );
  }
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(v.getUint16(6 + nameLength + 2 * i));
  return { ok: true, value: { name, infos } };
}

/** Encodes the data of `NBD_OPT_INFO` / `NBD_OPT_GO` (client side). */
export function encodeExportRequest(name: string, infos: number[]): Uint8Array {
  const nameBytes = encoder.encode(name);
  const out = new Uint8Array(6 + nameBytes.length + 2 * infos.length);
  const v = view(out);
  v.setUint32(0, nameBytes.length);
  out.set(nameBytes, 4);
  v.setUint16(4 + nameBytes.length, infos.length);
  infos.forEach((info, i) => v.setUint16(6 + nameBytes.length + 2 * i, info));
  return out;
}

/** Decodes the data of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`. */
export function parseMetaContextRequest(data: Uint8Array): Parsed<MetaContextRequest> {
  const v = view(data);
  if (data.length < 8) return invalid(`option data is ${data.length} bytes, at least 8 expected`);
  const nameLength = v.getUint32(0);
  if (nameLength > data.length - 8) {
    return invalid(`export name length ${nameLength} exceeds the option data`);
  }
  const exportName = decodeNbdString(data.subarray(4, 4 + nameLength));
  if (exportName === null) return invalid("export name is not a valid NBD string");
  let at = 4 + nameLength;
  const count = v.getUint32(at);
  at += 4;
  // Each query takes at least 4 bytes: a count beyond that cannot be honest.
  if (count > (data.length - at) / 4) {
    return invalid(`${count} queries cannot fit in ${data.length - at} bytes`);
  }
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return invalid(`query ${i} runs past the option data`);
    const length = v.getUint32(at);
    at += 4;
    if (length > data.length - at) return invalid(`query ${i} runs past the option data`);
    const query = decodeNbdString(data.subarray(at, at + length));
    if (query === null) return invalid(`query ${i} is not a valid NBD string`);
    queries.push(query);
    at += length;
  }
  if (at !== data.length) return invalid(`${data.length - at} bytes after the last query`);
  return { ok: true, value: { exportName, queries } };
}

/** Encodes the data of a meta context option (client side). */
export function encodeMetaContextRequest(exportName: string, queries: string[]): Uint8Array {
  const parts = [exportName, ...queries].map((s) => encoder.encode(s));
  // export name (4 + n), query count (4), each query (4 + n)
  const out = new Uint8Array(4 + parts.reduce((n, p) => n + 4 + p.length, 0));
  const v = view(out);
  let at = 0;
  v.setUint32(at, parts[0].length);
  out.set(parts[0], at + 4);
  at += 4 + parts[0].length;
  v.setUint32(at, queries.length);
  at += 4;
  for (const part of parts.slice(1)) {
    v.setUint32(at, part.length);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return out;
}

/** Encodes an option reply. */
export function encodeOptionReply(
  option: number,
  type: number,
  data: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(OPTION_REPLY_HEADER_BYTES + data.length);
  const v = view(out);
  v.setBigUint64(0, NBD_REP_MAGIC);
  v.setUint32(8, option);
  v.setUint32(12, type);
  v.setUint32(16, data.length);
  out.set(data, OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** Decodes the 20-byte option reply header (client side). */
export function parseOptionReplyHeader(bytes: Uint8Array): OptionReplyHeader {
  const v = view(bytes);
  return {
    magicOk: v.getBigUint64(0) === NBD_REP_MAGIC,
    option: v.getUint32(8),
    type: v.getUint32(12),
    length: v.getUint32(16),
  };
}

/** `NBD_INFO_EXPORT` payload: size and transmission flags. */
export function encodeInfoExport(sizeBytes: number, flags: number): Uint8Array {
  const out = new Uint8Array(12);
  const v = view(out);
  v.setUint16(0, NBD_INFO_EXPORT);
  v.setBigUint64(2, BigInt(sizeBytes));
  v.setUint16(10, flags);
  return out;
}

/** `NBD_INFO_BLOCK_SIZE` payload. */
export function encodeInfoBlockSize(min: number, preferred: number, max: number): Uint8Array {
  const out = new Uint8Array(14);
  const v = view(out);
  v.setUint16(0, NBD_INFO_BLOCK_SIZE);
  v.setUint32(2, min);
  v.setUint32(6, preferred);
  v.setUint32(10, max);
  return out;
}

/** A string-valued information payload (`NBD_INFO_NAME`, `NBD_INFO_DESCRIPTION`). */
export function encodeInfoString(type: number, text: string): Uint8Array {
  const bytes = encoder.encode(text);
  const out = new Uint8Array(2 + bytes.length);
  view(out).setUint16(0, type);
  out.set(bytes, 2);
  return out;
}

/** `NBD_REP_SERVER` payload: an export name (and an optional description after it). */
export function encodeServerReply(name: string, description = ""): Uint8Array {
  const nameBytes = encoder.encode(name);
  const descBytes = encoder.encode(description);
  const out = new Uint8Array(4 + nameBytes.length + descBytes.length);
  view(out).setUint32(0, nameBytes.length);
  out.set(nameBytes, 4);
  out.set(descBytes, 4 + nameBytes.length);
  return out;
}

/** `NBD_REP_META_CONTEXT` payload: context id and name. */
export function encodeMetaContextReply(id: number, name: string): Uint8Array {
  const bytes = encoder.encode(name);
  const out = new Uint8Array(4 + bytes.length);
  view(out).setUint32(0, id);
  out.set(bytes, 4);
  return out;
}

/** The export-information payload of an `NBD_REP_INFO` reply with `NBD_INFO_EXPORT`. */
export function parseInfoExport(data: Uint8Array): { sizeBytes: number; flags: number } | null {
  if (data.length !== 12 || view(data).getUint16(0) !== NBD_INFO_EXPORT) return null;
  const v = view(data);
  return { sizeBytes: Number(v.getBigUint64(2)), flags: v.getUint16(10) };
}
