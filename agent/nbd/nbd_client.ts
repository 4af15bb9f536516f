import { ErrorCode, PresyncError } from "../errors.ts";
import { io } from "../fs/io_error.ts";
import { ByteReader } from "./_byte_reader.ts";
import { formatNbdAddress, type NbdAddress } from "./nbd_address.ts";
import * as C from "./nbd_constants.ts";
import {
  encodeExportRequest,
  encodeMetaContextRequest,
  encodeOption,
  parseInfoExport,
  parseOptionReplyHeader,
} from "./option_codec.ts";
import { decodeBlockStatus, decodeReplyHeader, type StatusExtent } from "./reply_codec.ts";
import { encodeRequest } from "./request_codec.ts";

/** Options of {@linkcode NbdClient.connect}. */
export interface NbdClientOptions {
  /** Metadata contexts to select, e.g. `["qemu:dirty-bitmap:presync-1"]`. */
  metaContexts?: string[];
}

function violation(message: string): PresyncError {
  return new PresyncError(ErrorCode.PROTOCOL_VIOLATION, `NBD server: ${message}`);
}

function failed(message: string): PresyncError {
  return new PresyncError(ErrorCode.NBD_REQUEST_FAILED, message);
}

/**
 * A small NBD client: fixed newstyle handshake with `NBD_OPT_GO`, structured replies,
 * metadata contexts, and READ / WRITE / FLUSH / BLOCK_STATUS one request at a time.
 * Enough to read QEMU's dirty bitmaps and data; not a general-purpose client.
 *
 * @example
 * ```ts ignore
 * const client = await NbdClient.connect(parseNbdAddress("unix:/tmp/nbd.sock"), "disk", {
 *   metaContexts: ["qemu:dirty-bitmap:presync-1"],
 * });
 * const extents = await client.blockStatus(0, client.sizeBytes, "qemu:dirty-bitmap:presync-1");
 * await client.close();
 * ```
 */
export class NbdClient {
  /** Export size in bytes. */
  readonly sizeBytes: number;
  /** Transmission flags the server advertised. */
  readonly flags: number;
  /** Selected metadata contexts: name → id. */
  readonly contexts: ReadonlyMap<string, number>;
  readonly #conn: Deno.Conn;
  readonly #reader: ByteReader;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #cookie = 1n;
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(
    conn: Deno.Conn,
    reader: ByteReader,
    writer: WritableStreamDefaultWriter<Uint8Array>,
    info: { sizeBytes: number; flags: number; contexts: Map<string, number> },
  ) {
    this.#conn = conn;
    this.#reader = reader;
    this.#writer = writer;
    this.sizeBytes = info.sizeBytes;
    this.flags = info.flags;
    this.contexts = info.contexts;
  }

  /** Connects to `exportName` at `address` and enters the transmission phase. */
  static async connect(
    address: NbdAddress,
    exportName: string,
    options: NbdClientOptions = {},
  ): Promise<NbdClient> {
    const conn = await io<Deno.Conn>(
      `connect to NBD server ${formatNbdAddress(address)}`,
      () =>
        address.transport === "unix"
          ? Deno.connect({ transport: "unix", path: address.path })
          : Deno.connect({ hostname: address.hostname, port: address.port }),
    );
    const reader = new ByteReader(conn.readable);
    const writer = conn.writable.getWriter();
    try {
      const info = await negotiate(reader, writer, exportName, options.metaContexts ?? []);
      return new NbdClient(conn, reader, writer, info);
    } catch (err) {
      await reader.cancel();
      try {
        conn.close();
      } catch {
        // Already closed by the peer.
      }
      throw err;
    }
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(() => {
      if (this.#closed) throw failed("NBD client is closed");
      return fn();
    });
    this.#tail = next.catch(() => {});
    return next;
  }

  async #send(type: number, flags: number, offset: number, length: number, data?: Uint8Array) {
    const cookie = this.#cookie++;
    await this.#writer.write(encodeRequest(type, flags, cookie, offset, length));
    if (data) await this.#writer.write(data);
    return cookie;
  }

  /**
   * Reads `length` bytes at `offset` in as many requests of at most `MAX_PAYLOAD_BYTES` as it
   * takes (a single READ may not ask for more), into one buffer.
   */
  async readSpan(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    for (let at = 0; at < length; at += C.MAX_PAYLOAD_BYTES) {
      const piece = Math.min(C.MAX_PAYLOAD_BYTES, length - at);
      out.set(await this.read(offset + at, piece), at);
    }
    return out;
  }

  /** Reads `length` bytes at `offset` (holes come back as zeros). */
  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#serial(async () => {
      const cookie = await this.#send(C.NBD_CMD_READ, 0, offset, length);
      const out = new Uint8Array(length);
      await this.#chunks(cookie, "READ", (type, payload) => {
        const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
        if (payload.length < 8) throw violation("content chunk shorter than its offset");
        const at = Number(v.getBigUint64(0)) - offset;
        if (type === C.NBD_REPLY_TYPE_OFFSET_DATA) {
          if (at < 0 || at + payload.length - 8 > length) throw violation("data out of range");
          out.set(payload.subarray(8), at);
        } else if (type === C.NBD_REPLY_TYPE_OFFSET_HOLE) {
          if (payload.length !== 12) throw violation("hole chunk of wrong length");
          const size = v.getUint32(8);
          if (at < 0 || at + size > length) throw violation("hole out of range");
          out.fill(0, at, at + size);
        } else {
          throw violation(`unexpected chunk type ${type} in a READ reply`);
        }
      });
      return out;
    });
  }

  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      const cookie = await this.#send(C.NBD_CMD_WRITE, 0, offset, data.length, data);
      await this.#chunks(cookie, "WRITE", () => {
        throw violation("unexpected data in a WRITE reply");
      });
    });
  }

  /** Asks the server to make completed writes durable. */
  flush(): Promise<void> {
    return this.#serial(async () => {
      const cookie = await this.#send(C.NBD_CMD_FLUSH, 0, 0, 0);
      await this.#chunks(cookie, "FLUSH", () => {
        throw violation("unexpected data in a FLUSH reply");
      });
    });
  }

  /**
   * Status extents of context `contextName` from `offset` (consecutive; they may cover less
   * or slightly more than `length`, as the server decides).
   */
  blockStatus(offset: number, length: number, contextName: string): Promise<StatusExtent[]> {
    const id = this.contexts.get(contextName);
    if (id === undefined) {
      return Promise.reject(
        failed(`metadata context ${contextName} was not selected by the server`),
      );
    }
    return this.#serial(async () => {
      const cookie = await this.#send(C.NBD_CMD_BLOCK_STATUS, 0, offset, length);
      let extents: StatusExtent[] | null = null;
      await this.#chunks(cookie, "BLOCK_STATUS", (type, payload) => {
        if (type !== C.NBD_REPLY_TYPE_BLOCK_STATUS) {
          throw violation(`unexpected chunk type ${type} in a BLOCK_STATUS reply`);
        }
        const status = decodeBlockStatus(payload);
        if (!status) throw violation("malformed BLOCK_STATUS chunk");
        if (status.contextId === id) extents = status.extents;
      });
      if (!extents) throw violation(`no BLOCK_STATUS chunk for ${contextName}`);
      return extents;
    });
  }

  /** Reads one reply (simple or structured) for `cookie`, passing content chunks on. */
  async #chunks(
    cookie: bigint,
    what: string,
    onChunk: (type: number, payload: Uint8Array) => void | Promise<void>,
  ): Promise<void> {
    let error: PresyncError | null = null;
    while (true) {
      const magic = await this.#reader.readExact(4, `${what} reply`);
      const kind = new DataView(magic.buffer, magic.byteOffset, 4).getUint32(0);
      const rest = kind === C.NBD_SIMPLE_REPLY_MAGIC
        ? C.SIMPLE_REPLY_BYTES - 4
        : C.CHUNK_HEADER_BYTES - 4;
      const header = new Uint8Array(4 + rest);
      header.set(magic);
      header.set(await this.#reader.readExact(rest, `${what} reply`), 4);
      const reply = decodeReplyHeader(header);
      if (reply.kind === "bad") {
        throw violation(`reply magic 0x${reply.magic.toString(16)} is not an NBD reply`);
      }
      if (reply.cookie !== cookie) throw violation(`reply for unknown cookie ${reply.cookie}`);
      if (reply.kind === "simple") {
        if (reply.error !== 0) throw failed(`NBD ${what} failed with error ${reply.error}`);
        if (what === "READ" || what === "BLOCK_STATUS") {
          throw violation(`simple reply to ${what} after structured replies were negotiated`);
        }
        return;
      }
      if (reply.length > C.MAX_PAYLOAD_BYTES + 64) throw violation("oversize reply chunk");
      const payload = await this.#reader.readExact(reply.length, `${what} reply payload`);
      if ((reply.type & 0x8000) !== 0) {
        const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
        const errno = payload.length >= 4 ? v.getUint32(0) : C.NBD_EINVAL;
        const msgLength = payload.length >= 6 ? v.getUint16(4) : 0;
        const text = new TextDecoder().decode(payload.subarray(6, 6 + msgLength));
        error ??= failed(`NBD ${what} failed with error ${errno}${text ? `: ${text}` : ""}`);
      } else if (reply.type !== C.NBD_REPLY_TYPE_NONE) {
        await onChunk(reply.type, payload);
      }
      if ((reply.flags & C.NBD_REPLY_FLAG_DONE) !== 0) break;
    }
    if (error) throw error;
  }

  /** Sends `NBD_CMD_DISC` and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#tail;
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#writer.write(encodeRequest(C.NBD_CMD_DISC, 0, this.#cookie++, 0, 0));
      await this.#writer.close();
    } catch {
      // The server is gone already.
    }
    await this.#reader.cancel();
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }
}

async function negotiate(
  reader: ByteReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  exportName: string,
  metaContexts: string[],
): Promise<{ sizeBytes: number; flags: number; contexts: Map<string, number> }> {
  const hello = await reader.readExact(18, "the NBD greeting");
  const hv = new DataView(hello.buffer, hello.byteOffset, 18);
  if (hv.getBigUint64(0) !== C.NBD_MAGIC || hv.getBigUint64(8) !== C.NBD_OPTS_MAGIC) {
    throw violation("not a newstyle NBD server (bad greeting magic)");
  }
  const serverFlags = hv.getUint16(16);
  if ((serverFlags & C.NBD_FLAG_FIXED_NEWSTYLE) === 0) {
    throw violation("server does not speak fixed newstyle negotiation");
  }
  const clientFlags = new Uint8Array(4);
  new DataView(clientFlags.buffer).setUint32(
    0,
    C.NBD_FLAG_C_FIXED_NEWSTYLE | (serverFlags & C.NBD_FLAG_NO_ZEROES ? C.NBD_FLAG_C_NO_ZEROES : 0),
  );
  await writer.write(clientFlags);

  /** Sends an option and collects its replies until the final one. */
  const option = async (opt: number, data?: Uint8Array) => {
    await writer.write(encodeOption(opt, data));
    const replies: { type: number; data: Uint8Array }[] = [];
    while (true) {
      const header = parseOptionReplyHeader(await reader.readExact(20, "an option reply"));
      if (!header.magicOk || header.option !== opt) throw violation("malformed option reply");
      if (header.length > C.MAX_OPTION_REPLY_BYTES) throw violation("oversize option reply");
      const body = await reader.readExact(header.length, "option reply data");
      if (header.type >= 0x8000_0000) {
        const text = new TextDecoder().decode(body);
        throw failed(
          `NBD option ${opt} refused with 0x${header.type.toString(16)}${text ? `: ${text}` : ""}`,
        );
      }
      if (header.type === C.NBD_REP_ACK) return replies;
      replies.push({ type: header.type, data: body });
    }
  };

  await option(C.NBD_OPT_STRUCTURED_REPLY);
  const contexts = new Map<string, number>();
  if (metaContexts.length > 0) {
    for (
      const reply of await option(
        C.NBD_OPT_SET_META_CONTEXT,
        encodeMetaContextRequest(exportName, metaContexts),
      )
    ) {
      if (reply.type !== C.NBD_REP_META_CONTEXT || reply.data.length < 4) continue;
      const id = new DataView(reply.data.buffer, reply.data.byteOffset, 4).getUint32(0);
      contexts.set(new TextDecoder().decode(reply.data.subarray(4)), id);
    }
  }
  let info: { sizeBytes: number; flags: number } | null = null;
  for (const reply of await option(C.NBD_OPT_GO, encodeExportRequest(exportName, []))) {
    if (reply.type === C.NBD_REP_INFO) info = parseInfoExport(reply.data) ?? info;
  }
  if (!info) throw violation("NBD_OPT_GO succeeded without NBD_INFO_EXPORT");
  return { ...info, contexts };
}
