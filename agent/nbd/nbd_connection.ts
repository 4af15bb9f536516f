import { ErrorCode, PresyncError } from "../errors.ts";
import { ByteReader } from "./_byte_reader.ts";
import { type Access, InflightRequests } from "./_inflight_requests.ts";
import { ReplyWriter } from "./_reply_writer.ts";
import { type ByteSink, SocketWriter } from "./_socket_writer.ts";
import * as C from "./nbd_constants.ts";
import type { NbdExport } from "./nbd_export.ts";
import {
  decodeNbdString,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
  parseExportRequest,
  parseMetaContextRequest,
  parseOptionHeader,
} from "./option_codec.ts";
import {
  DATA_CHUNK_HEAD_BYTES,
  encodeBlockStatusChunk,
  encodeChunkHeader,
  encodeDataChunkHead,
  encodeErrorChunk,
  encodeSimpleReply,
  type StatusExtent,
  writeDataChunkHead,
} from "./reply_codec.ts";
import { checkRequest, commandName, decodeRequest, type NbdRequest } from "./request_codec.ts";

/** A byte stream both ways: a `Deno.Conn`, or a pair of in-memory streams in tests. */
export interface Duplex {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

/** Options of {@linkcode serveNbdConnection}. */
export interface NbdConnectionOptions {
  /** Called with errors that ended the connection (protocol violations, I/O). */
  onError?: (err: unknown) => void;
}

/** Largest option data read into memory; larger options are skipped with `ERR_TOO_BIG`. */
export const MAX_OPTION_BYTES = 64 * 1024;
/** Larger options than this are not even skipped: the client is hung up on. */
const MAX_SKIPPED_OPTION_BYTES = 16 * 1024 * 1024;
/** Options per connection before the server decides the client is misbehaving. */
const MAX_OPTIONS = 1024;
/** The id of `base:allocation` in replies to `NBD_OPT_SET_META_CONTEXT`. */
const ALLOCATION_CONTEXT_ID = 1;
/** Most block-status descriptors in one chunk (the specification's 2^20). */
const MAX_STATUS_EXTENTS = 2 ** 20;

/** A protocol violation after which the connection is dropped (a hard disconnect). */
class HangUp extends Error {}

/** The NBD export table a connection chooses from. */
export type ExportTable = ReadonlyMap<string, NbdExport>;

/** The export for `name`; the empty name picks the only export when there is one. */
export function findExport(exports: ExportTable, name: string): NbdExport | undefined {
  if (name === "" && exports.size === 1) return exports.values().next().value;
  return exports.get(name);
}

/** The transmission flags an export is advertised with. */
export function transmissionFlags(ex: NbdExport, structured: boolean): number {
  let flags = C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA;
  if (ex.readOnly) flags |= C.NBD_FLAG_READ_ONLY;
  else flags |= C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_WRITE_ZEROES;
  if (structured) flags |= C.NBD_FLAG_SEND_DF;
  if (ex.multiConn) flags |= C.NBD_FLAG_CAN_MULTI_CONN;
  return flags;
}

/** The NBD error value for a failed export operation. */
function errnoFor(err: unknown): number {
  return err instanceof PresyncError && err.code === ErrorCode.NO_SPACE ? C.NBD_ENOSPC : C.NBD_EIO;
}

/**
 * Serves one client connection to the end: fixed newstyle handshake, then transmission.
 * Never throws: protocol violations and I/O failures end the connection and are reported
 * to `onError`. Requests are pipelined (see {@linkcode MAX_INFLIGHT_REQUESTS}); replies may
 * come in any order. Replies to a `Deno.Conn` are written with direct socket ops
 * ({@linkcode SocketWriter}), to any other duplex through its writable stream.
 */
export async function serveNbdConnection(
  conn: Duplex | Deno.Conn,
  exports: ExportTable,
  options: NbdConnectionOptions = {},
): Promise<void> {
  const reader = new ByteReader(conn.readable);
  const writer: ByteSink = typeof (conn as Deno.Conn).write === "function"
    ? new SocketWriter(conn as Deno.Conn)
    : conn.writable.getWriter();
  try {
    const chosen = await handshake(reader, writer, exports);
    if (chosen) await transmission(reader, writer, chosen);
  } catch (err) {
    if (!(err instanceof HangUp) || err.message) options.onError?.(err);
  } finally {
    await reader.cancel();
    try {
      await writer.close();
    } catch {
      // The peer went away first.
    }
  }
}

interface Chosen {
  ex: NbdExport;
  structured: boolean;
  metaContexts: number;
}

async function handshake(
  reader: ByteReader,
  writer: ByteSink,
  exports: ExportTable,
): Promise<Chosen | null> {
  const hello = new Uint8Array(18);
  const hv = new DataView(hello.buffer);
  hv.setBigUint64(0, C.NBD_MAGIC);
  hv.setBigUint64(8, C.NBD_OPTS_MAGIC);
  hv.setUint16(16, C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
  await writer.write(hello);
  const clientFlags = await reader.read(4);
  if (!clientFlags) return null;
  const flags = new DataView(clientFlags.buffer, clientFlags.byteOffset, 4).getUint32(0);
  if ((flags & ~(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES)) !== 0) {
    throw new HangUp(`client sent unknown client flags 0x${flags.toString(16)}`);
  }
  const noZeroes = (flags & C.NBD_FLAG_C_NO_ZEROES) !== 0;
  let structured = false;
  let selected: { exportName: string; count: number } | null = null;
  const reply = (option: number, type: number, data?: Uint8Array) =>
    writer.write(encodeOptionReply(option, type, data));
  const error = (option: number, type: number, message: string) =>
    reply(option, type, new TextEncoder().encode(message));

  for (let n = 0; n < MAX_OPTIONS; n++) {
    const headerBytes = await reader.read(C.OPTION_HEADER_BYTES);
    if (!headerBytes) return null;
    const header = parseOptionHeader(headerBytes);
    if (!header.magicOk) throw new HangUp("option request without the IHAVEOPT magic");
    const { option, length } = header;
    if (length > MAX_OPTION_BYTES) {
      if (length > MAX_SKIPPED_OPTION_BYTES || option === C.NBD_OPT_EXPORT_NAME) {
        throw new HangUp(`option ${option} carries ${length} bytes; too large`);
      }
      await reader.skip(length, "option data");
      await error(option, C.NBD_REP_ERR_TOO_BIG, `option data of ${length} bytes is too large`);
      continue;
    }
    const data = await reader.readExact(length, "option data");
    switch (option) {
      case C.NBD_OPT_EXPORT_NAME: {
        const name = decodeNbdString(data);
        const ex = name === null ? undefined : findExport(exports, name);
        // The specification leaves no way to report the error here but hanging up.
        if (!ex) throw new HangUp();
        const out = new Uint8Array(noZeroes ? 10 : 134);
        const v = new DataView(out.buffer);
        v.setBigUint64(0, BigInt(ex.sizeBytes));
        v.setUint16(8, transmissionFlags(ex, structured));
        await writer.write(out);
        return { ex, structured, metaContexts: countFor(selected, ex, exports) };
      }
      case C.NBD_OPT_ABORT:
        // The client may hang up without waiting for this acknowledgement.
        await reply(option, C.NBD_REP_ACK).catch(() => {});
        return null;
      case C.NBD_OPT_LIST:
        if (length !== 0) {
          await error(option, C.NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
          break;
        }
        for (const ex of exports.values()) {
          await reply(option, C.NBD_REP_SERVER, encodeServerReply(ex.name, ex.description));
        }
        await reply(option, C.NBD_REP_ACK);
        break;
      case C.NBD_OPT_INFO:
      case C.NBD_OPT_GO: {
        const parsed = parseExportRequest(data);
        if (!parsed.ok) {
          await error(option, parsed.error, parsed.message);
          break;
        }
        const ex = findExport(exports, parsed.value.name);
        if (!ex) {
          await error(option, C.NBD_REP_ERR_UNKNOWN, `no export named "${parsed.value.name}"`);
          break;
        }
        const flagsOut = transmissionFlags(ex, structured);
        await reply(option, C.NBD_REP_INFO, encodeInfoExport(ex.sizeBytes, flagsOut));
        for (const info of new Set(parsed.value.infos)) {
          if (info === C.NBD_INFO_NAME) {
            await reply(option, C.NBD_REP_INFO, encodeInfoString(C.NBD_INFO_NAME, ex.name));
          } else if (info === C.NBD_INFO_DESCRIPTION && ex.description) {
            await reply(
              option,
              C.NBD_REP_INFO,
              encodeInfoString(C.NBD_INFO_DESCRIPTION, ex.description),
            );
          } else if (info === C.NBD_INFO_BLOCK_SIZE) {
            await reply(
              option,
              C.NBD_REP_INFO,
              encodeInfoBlockSize(1, C.PREFERRED_BLOCK_BYTES, C.MAX_PAYLOAD_BYTES),
            );
          }
        }
        await reply(option, C.NBD_REP_ACK);
        if (option === C.NBD_OPT_GO) {
          return { ex, structured, metaContexts: countFor(selected, ex, exports) };
        }
        break;
      }
      case C.NBD_OPT_STRUCTURED_REPLY:
        if (length !== 0) {
          await error(option, C.NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
        } else if (structured) {
          await error(option, C.NBD_REP_ERR_INVALID, "structured replies already negotiated");
        } else {
          structured = true;
          await reply(option, C.NBD_REP_ACK);
        }
        break;
      case C.NBD_OPT_LIST_META_CONTEXT:
      case C.NBD_OPT_SET_META_CONTEXT: {
        const set = option === C.NBD_OPT_SET_META_CONTEXT;
        if (set) selected = null; // replaced even when the request fails
        if (!structured) {
          await error(option, C.NBD_REP_ERR_INVALID, "negotiate structured replies first");
          break;
        }
        const parsed = parseMetaContextRequest(data);
        if (!parsed.ok) {
          await error(option, parsed.error, parsed.message);
          break;
        }
        const { exportName, queries } = parsed.value;
        if (!findExport(exports, exportName)) {
          await error(option, C.NBD_REP_ERR_UNKNOWN, `no export named "${exportName}"`);
          break;
        }
        const matches = set ? queries.includes(C.BASE_ALLOCATION) : queries.length === 0 ||
          queries.some((q) => q === "base:" || q === C.BASE_ALLOCATION);
        if (matches) {
          await reply(
            option,
            C.NBD_REP_META_CONTEXT,
            encodeMetaContextReply(set ? ALLOCATION_CONTEXT_ID : 0, C.BASE_ALLOCATION),
          );
        }
        if (set) selected = { exportName, count: matches ? 1 : 0 };
        await reply(option, C.NBD_REP_ACK);
        break;
      }
      case C.NBD_OPT_STARTTLS:
        await error(option, C.NBD_REP_ERR_UNSUP, "this server does not offer TLS");
        break;
      default:
        await error(option, C.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }
  throw new HangUp(`client sent more than ${MAX_OPTIONS} options`);
}

/** Contexts selected for the export finally chosen (none if selected for another). */
function countFor(
  selected: { exportName: string; count: number } | null,
  ex: NbdExport,
  exports: ExportTable,
): number {
  if (!selected) return 0;
  return findExport(exports, selected.exportName) === ex ? selected.count : 0;
}

/** The bound on one connection's requests in flight (admitted, reply not yet written). */
export const MAX_INFLIGHT_REQUESTS = 16;
/** The bound on the data bytes (write payloads, read buffers) of those requests. */
export const MAX_INFLIGHT_BYTES = 32 * 1024 * 1024;

/** How each command touches the export, for {@linkcode InflightRequests}'s ordering. */
function accessOf(type: number): Access {
  switch (type) {
    case C.NBD_CMD_READ:
    case C.NBD_CMD_BLOCK_STATUS:
      return "read";
    case C.NBD_CMD_WRITE:
    case C.NBD_CMD_WRITE_ZEROES:
    case C.NBD_CMD_TRIM:
      return "write";
    case C.NBD_CMD_FLUSH:
      return "flush";
    default:
      return "none";
  }
}

/**
 * The transmission phase, pipelined: requests are read while earlier ones are in flight and
 * replies go out as requests finish, in any order (the client matches them by cookie).
 * {@linkcode InflightRequests} keeps overlapping requests and FLUSH in order and bounds what
 * is in flight; a request counts until its reply is written, so a client that stops reading
 * replies stops being read from.
 */
async function transmission(
  reader: ByteReader,
  writer: ByteSink,
  chosen: Chosen,
): Promise<void> {
  const { ex, structured } = chosen;
  const ctx = {
    sizeBytes: ex.sizeBytes,
    readOnly: ex.readOnly,
    fua: true,
    structuredReplies: structured,
    metaContexts: chosen.metaContexts,
  };
  const replies = new ReplyWriter(writer);
  const inflight = new InflightRequests(MAX_INFLIGHT_REQUESTS, MAX_INFLIGHT_BYTES);
  let failure: { err: unknown } | null = null;
  const fail = (err: unknown) => {
    failure ??= { err };
    void reader.cancel();
  };
  try {
    while (!failure) {
      // Replies to requests that arrived together go out together; release before waiting.
      if (reader.buffered >= C.REQUEST_HEADER_BYTES) replies.hold();
      else replies.release();
      const bytes = await reader.read(C.REQUEST_HEADER_BYTES);
      if (!bytes) break;
      const req = decodeRequest(bytes);
      if (!req.magicOk) throw new HangUp("request without the NBD request magic");
      if (req.type === C.NBD_CMD_DISC) break;
      const verdict = checkRequest(req, ctx);
      const isWrite = req.type === C.NBD_CMD_WRITE;
      const held = isWrite
        ? (req.length <= C.MAX_PAYLOAD_BYTES ? req.length : 0)
        : (verdict.ok && req.type === C.NBD_CMD_READ ? req.length : 0);
      if (!inflight.hasRoom(held)) {
        replies.release();
        await inflight.room(held);
      }
      let payload: Uint8Array | null = null;
      if (isWrite) {
        if (reader.buffered < req.length) replies.release();
        if (req.length <= C.MAX_PAYLOAD_BYTES) payload = await reader.readExact(req.length, "data");
        else await reader.skip(req.length, "write data");
      }
      const slot = verdict.ok
        ? inflight.add(accessOf(req.type), Number(req.offset), req.length, held)
        : inflight.add("none", 0, 0, held);
      const run = async () => {
        if (slot.after.length > 0) await Promise.all(slot.after);
        if (!verdict.ok) {
          await sendError(replies, req, structured, verdict.error, verdict.message);
        } else {
          await perform(replies, req, chosen, payload);
        }
      };
      run().then(slot.finish, (err) => {
        slot.finish();
        fail(err);
      });
    }
  } catch (err) {
    if (!failure) throw err;
  } finally {
    replies.release();
    await inflight.drained();
  }
  if (failure) throw (failure as { err: unknown }).err;
}

async function sendError(
  replies: ReplyWriter,
  req: NbdRequest,
  structured: boolean,
  error: number,
  message: string,
): Promise<void> {
  if (structured) await replies.send(encodeErrorChunk(req.cookie, error, message));
  else await replies.send(encodeSimpleReply(req.cookie, error));
}

/** Runs one admitted request and writes its reply; only a failed reply write rejects. */
async function perform(
  replies: ReplyWriter,
  req: NbdRequest,
  chosen: Chosen,
  payload: Uint8Array | null,
): Promise<void> {
  let reply: Uint8Array[];
  try {
    reply = await execute(req, chosen, payload);
  } catch (err) {
    const message = `${commandName(req.type)} failed: ${err instanceof Error ? err.message : err}`;
    return sendError(replies, req, chosen.structured, errnoFor(err), message);
  }
  await replies.send(...reply);
}

/** Does what `req` asks of the export; resolves with the reply's parts. */
async function execute(
  req: NbdRequest,
  chosen: Chosen,
  payload: Uint8Array | null,
): Promise<Uint8Array[]> {
  const { ex, structured } = chosen;
  const offset = Number(req.offset);
  const fua = (req.flags & C.NBD_CMD_FLAG_FUA) !== 0;
  switch (req.type) {
    case C.NBD_CMD_READ: {
      if (structured && req.length === 0) {
        return [encodeChunkHeader(req.cookie, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_NONE, 0)];
      }
      if (req.length === 0) return [encodeSimpleReply(req.cookie, 0)];
      if (!ex.readInto) {
        const head = structured
          ? encodeDataChunkHead(req.cookie, req.offset, req.length, true)
          : encodeSimpleReply(req.cookie, 0);
        return [head, await ex.read(offset, req.length)];
      }
      // One buffer, head then data read straight into it: one allocation, one socket write.
      const headBytes = structured ? DATA_CHUNK_HEAD_BYTES : C.SIMPLE_REPLY_BYTES;
      const reply = new Uint8Array(headBytes + req.length);
      if (structured) writeDataChunkHead(reply, req.cookie, req.offset, req.length, true);
      else reply.set(encodeSimpleReply(req.cookie, 0));
      await ex.readInto(offset, reply.subarray(headBytes));
      return [reply];
    }
    case C.NBD_CMD_WRITE:
      if (payload!.length > 0) await ex.write(offset, payload!);
      break;
    case C.NBD_CMD_WRITE_ZEROES:
      if (req.length > 0) {
        await ex.writeZeroes(offset, req.length, {
          noHole: (req.flags & C.NBD_CMD_FLAG_NO_HOLE) !== 0,
        });
      }
      break;
    case C.NBD_CMD_TRIM:
      if (req.length > 0) await ex.trim(offset, req.length);
      break;
    case C.NBD_CMD_FLUSH:
      await ex.flush();
      break;
    case C.NBD_CMD_CACHE:
      break;
    case C.NBD_CMD_BLOCK_STATUS: {
      if (req.length === 0) {
        return [encodeErrorChunk(req.cookie, C.NBD_EINVAL, "BLOCK_STATUS of length 0")];
      }
      const extents = await allocationOf(ex, offset, req.length, req.flags);
      return [encodeBlockStatusChunk(req.cookie, ALLOCATION_CONTEXT_ID, extents, true)];
    }
  }
  if (fua && req.type !== C.NBD_CMD_FLUSH) await ex.flush();
  return [encodeSimpleReply(req.cookie, 0)];
}

/** The `base:allocation` extents to report, within the specification's limits. */
async function allocationOf(
  ex: NbdExport,
  offset: number,
  length: number,
  flags: number,
): Promise<StatusExtent[]> {
  const reqOne = (flags & C.NBD_CMD_FLAG_REQ_ONE) !== 0;
  let extents = ex.allocation
    ? await ex.allocation(offset, length)
    : [{ lengthBytes: length, flags: 0 }];
  extents = extents.filter((e) => e.lengthBytes > 0);
  if (extents.length === 0) extents = [{ lengthBytes: length, flags: 0 }];
  if (reqOne) {
    return [{ lengthBytes: Math.min(extents[0].lengthBytes, length), flags: extents[0].flags }];
  }
  // The sum of all but the last extent must stay below the requested length.
  const out: StatusExtent[] = [];
  let covered = 0;
  for (const e of extents) {
    if (covered >= length || out.length >= MAX_STATUS_EXTENTS) break;
    out.push({ lengthBytes: Math.min(e.lengthBytes, 0xffff_ffff), flags: e.flags });
    covered += e.lengthBytes;
  }
  return out;
}
