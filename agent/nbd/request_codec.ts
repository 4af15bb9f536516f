/**
 * Pure decoding and validation of transmission requests: the 28-byte header, and the check
 * that decides, before any I/O, which error the specification prescribes for a request
 * (bad flags, out-of-range offsets, oversize lengths, unknown commands, read-only exports).
 *
 * @module
 */

import {
  MAX_PAYLOAD_BYTES,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_REQUEST_MAGIC,
  REQUEST_HEADER_BYTES,
} from "./nbd_constants.ts";

/** A decoded request header. */
export interface NbdRequest {
  /** False when the magic was wrong: the stream cannot be trusted any more (hang up). */
  magicOk: boolean;
  flags: number;
  type: number;
  /** Opaque, echoed in the reply. */
  cookie: bigint;
  /** Unsigned 64-bit offset; may exceed 2^53, so kept exact. */
  offset: bigint;
  length: number;
}

/** What the server negotiated for this connection, as far as request checks need it. */
export interface RequestContext {
  sizeBytes: number;
  readOnly: boolean;
  /** Whether `NBD_FLAG_SEND_FUA` was advertised. */
  fua: boolean;
  structuredReplies: boolean;
  /** Number of metadata contexts selected for this export. */
  metaContexts: number;
}

/** The verdict on a request: go ahead, or reply with `error`. */
export type RequestVerdict = { ok: true } | { ok: false; error: number; message: string };

/** Decodes a 28-byte request header. */
export function decodeRequest(bytes: Uint8Array): NbdRequest {
  const v = new DataView(bytes.buffer, bytes.byteOffset, REQUEST_HEADER_BYTES);
  return {
    magicOk: v.getUint32(0) === NBD_REQUEST_MAGIC,
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: v.getBigUint64(16),
    length: v.getUint32(24),
  };
}

/** Encodes a request header (client side); a WRITE's payload follows it separately. */
export function encodeRequest(
  type: number,
  flags: number,
  cookie: bigint,
  offset: number,
  length: number,
): Uint8Array {
  const out = new Uint8Array(REQUEST_HEADER_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, NBD_REQUEST_MAGIC);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  v.setBigUint64(8, cookie);
  v.setBigUint64(16, BigInt(offset));
  v.setUint32(24, length);
  return out;
}

const NAMES: Record<number, string> = {
  [NBD_CMD_READ]: "READ",
  [NBD_CMD_WRITE]: "WRITE",
  [NBD_CMD_DISC]: "DISC",
  [NBD_CMD_FLUSH]: "FLUSH",
  [NBD_CMD_TRIM]: "TRIM",
  [NBD_CMD_CACHE]: "CACHE",
  [NBD_CMD_WRITE_ZEROES]: "WRITE_ZEROES",
  [NBD_CMD_BLOCK_STATUS]: "BLOCK_STATUS",
};

/** The command's name for messages, e.g. `WRITE` or `command 99`. */
export function commandName(type: number): string {
  return NAMES[type] ?? `command ${type}`;
}

function fail(error: number, message: string): RequestVerdict {
  return { ok: false, error, message };
}

/** Flags each command accepts besides FUA. */
function extraFlags(type: number, ctx: RequestContext): number {
  switch (type) {
    case NBD_CMD_READ:
      return ctx.structuredReplies ? NBD_CMD_FLAG_DF : 0;
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_NO_HOLE;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_REQ_ONE;
    default:
      return 0;
  }
}

/**
 * Decides what the specification prescribes for `req` on this connection. `NBD_CMD_DISC`
 * is always ok (it has no reply). A WRITE's payload must be consumed whatever the verdict.
 */
export function checkRequest(req: NbdRequest, ctx: RequestContext): RequestVerdict {
  const name = NAMES[req.type];
  if (name === undefined) return fail(NBD_EINVAL, `unknown command ${req.type}`);
  if (req.type === NBD_CMD_DISC) return { ok: true };
  const allowed = (ctx.fua ? NBD_CMD_FLAG_FUA : 0) | extraFlags(req.type, ctx);
  if ((req.flags & ~allowed) !== 0) {
    return fail(NBD_EINVAL, `${name}: flags 0x${req.flags.toString(16)} not allowed here`);
  }
  if (req.type === NBD_CMD_FLUSH) {
    return req.offset === 0n && req.length === 0
      ? { ok: true }
      : fail(NBD_EINVAL, "FLUSH: offset and length must be zero");
  }
  const writes = req.type === NBD_CMD_WRITE || req.type === NBD_CMD_WRITE_ZEROES ||
    req.type === NBD_CMD_TRIM;
  if (writes && ctx.readOnly) return fail(NBD_EPERM, `${name}: the export is read-only`);
  if (req.type === NBD_CMD_READ && req.length > MAX_PAYLOAD_BYTES) {
    return fail(NBD_EOVERFLOW, `READ of ${req.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  }
  if (req.type === NBD_CMD_WRITE && req.length > MAX_PAYLOAD_BYTES) {
    return fail(NBD_EINVAL, `WRITE of ${req.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  }
  if (req.type === NBD_CMD_BLOCK_STATUS && (!ctx.structuredReplies || ctx.metaContexts === 0)) {
    return fail(NBD_EINVAL, "BLOCK_STATUS: no metadata context was negotiated");
  }
  if (req.offset + BigInt(req.length) > BigInt(ctx.sizeBytes)) {
    const error = req.type === NBD_CMD_WRITE || req.type === NBD_CMD_WRITE_ZEROES
      ? NBD_ENOSPC
      : NBD_EINVAL;
    return fail(
      error,
      `${name}: offset ${req.offset} + length ${req.length} is past the end of the export ` +
        `(${ctx.sizeBytes} bytes)`,
    );
  }
  return { ok: true };
}
