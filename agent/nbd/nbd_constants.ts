/**
 * The numbers of the NBD protocol, named as in the specification
 * (NetworkBlockDevice/nbd, `doc/proto.md`: "Values"). All fields travel big-endian.
 *
 * @module
 */

/** `NBDMAGIC`: first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** `IHAVEOPT`: second server magic (newstyle) and the magic of every option request. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Magic of every option reply (fixed newstyle). */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
/** Magic of a transmission request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Magic of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Magic of a structured reply chunk. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server, 16 bits). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags (16 bits). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

/** Option types. */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

/** Option reply types; errors have bit 31 set. */
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_ERR_UNSUP = 0x8000_0001;
export const NBD_REP_ERR_POLICY = 0x8000_0002;
export const NBD_REP_ERR_INVALID = 0x8000_0003;
export const NBD_REP_ERR_UNKNOWN = 0x8000_0006;
export const NBD_REP_ERR_SHUTDOWN = 0x8000_0007;
export const NBD_REP_ERR_TOO_BIG = 0x8000_0009;

/** Information types of `NBD_REP_INFO`. */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Command types. */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

/** Command flags. */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** Structured reply flags and types. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 0x8001;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 0x8002;

/** Error values of replies. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** `base:allocation` status flags. */
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
/** `qemu:dirty-bitmap:NAME` status flag: the extent is dirty. */
export const NBD_STATE_DIRTY = 1 << 0;

/** The one metadata context our exports offer. */
export const BASE_ALLOCATION = "base:allocation";

/** Longest string (export name, context name, message) the specification allows. */
export const MAX_STRING_BYTES = 4096;
/**
 * Largest READ/WRITE payload we accept: 2^25 (32 MiB), the size the specification says
 * servers should support and clients should not exceed.
 */
export const MAX_PAYLOAD_BYTES = 2 ** 25;
/** Preferred block size we advertise (the specification's default, 4 KiB). */
export const PREFERRED_BLOCK_BYTES = 4096;
/** Request header length in bytes. */
export const REQUEST_HEADER_BYTES = 28;
/** Option request header length in bytes (magic, option, length). */
export const OPTION_HEADER_BYTES = 16;
/** Option reply header length in bytes (magic, option, type, length). */
export const OPTION_REPLY_HEADER_BYTES = 20;
/** Simple reply header length in bytes. */
export const SIMPLE_REPLY_BYTES = 16;
/** Structured reply chunk header length in bytes. */
export const CHUNK_HEADER_BYTES = 20;
/** Largest option reply a client accepts (export lists and info stay far below). */
export const MAX_OPTION_REPLY_BYTES = 1 << 20;
