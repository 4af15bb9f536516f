/**
 * Our own implementation of the NBD protocol (NetworkBlockDevice/nbd `doc/proto.md`):
 * a pure codec, a server and a small client.
 *
 * Glossary:
 * - **export**: a named byte range a server offers ({@linkcode NbdExport}); clients pick
 *   one by name during the handshake.
 * - **handshake**: the first phase: greeting, client flags, then *options* (fixed newstyle
 *   negotiation) until `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME` enters *transmission*.
 * - **option reply**: the server's answer to one option; errors have bit 31 set.
 * - **request / reply**: the transmission phase's messages; a reply echoes the request's
 *   *cookie*. *Simple replies* carry only an error (and READ data); *structured replies*
 *   are chunks (data, hole, block status, error), the last flagged DONE.
 * - **metadata context**: a named kind of per-extent status, queried with BLOCK_STATUS:
 *   `base:allocation` (holes and zeros, served by us) and `qemu:dirty-bitmap:NAME`
 *   (QEMU's dirty bitmaps, read by our client).
 * - **hard disconnect**: dropping the connection, the only answer to a broken stream
 *   (wrong magic, unknown client flags, an export name that cannot be served).
 * - **in flight**: a request read from the socket whose reply is not yet written. The
 *   server reads the next request while earlier ones are in flight (*pipelining*, up to
 *   `MAX_INFLIGHT_REQUESTS` requests and `MAX_INFLIGHT_BYTES` data bytes per connection) and
 *   replies as each finishes, in any order; overlapping reads and writes run in the order
 *   they arrived, and a FLUSH waits for every write that arrived before it.
 *
 * What the server does with bad input, as the specification prescribes: unknown options
 * get `NBD_REP_ERR_UNSUP`; malformed ones `NBD_REP_ERR_INVALID`; unknown commands and
 * flags `NBD_EINVAL`; reads, trims and block-status queries past the end `NBD_EINVAL`;
 * writes and write-zeroes past the end `NBD_ENOSPC`; writes to a read-only export
 * `NBD_EPERM`; reads over 32 MiB `NBD_EOVERFLOW`. Not implemented: TLS (`STARTTLS` gets
 * `NBD_REP_ERR_UNSUP`), oldstyle negotiation, extended headers, `NBD_CMD_CACHE` (accepted,
 * no effect).
 *
 * @module
 */

export * from "./nbd_constants.ts";
export { formatNbdAddress, type NbdAddress, nbdUri, parseNbdAddress } from "./nbd_address.ts";
export type { NbdExport } from "./nbd_export.ts";
export { FileExport, type FileExportOptions } from "./file_export.ts";
export { fileAllocation, zeroFileRange, type ZeroMethod, type ZeroOptions } from "./file_holes.ts";
export {
  type Duplex,
  type ExportTable,
  findExport,
  MAX_INFLIGHT_BYTES,
  MAX_INFLIGHT_REQUESTS,
  MAX_OPTION_BYTES,
  type NbdConnectionOptions,
  serveNbdConnection,
  transmissionFlags,
} from "./nbd_connection.ts";
export { NbdServer, type NbdServerOptions } from "./nbd_server.ts";
export { NbdClient, type NbdClientOptions } from "./nbd_client.ts";
export {
  checkRequest,
  commandName,
  decodeRequest,
  encodeRequest,
  type NbdRequest,
  type RequestContext,
  type RequestVerdict,
} from "./request_codec.ts";
export * from "./option_codec.ts";
export * from "./reply_codec.ts";
export { type FileExtent, PositionalFile } from "./_positional_file.ts";
