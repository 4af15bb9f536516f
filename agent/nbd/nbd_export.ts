import type { ZeroOptions } from "./file_holes.ts";
import type { StatusExtent } from "./reply_codec.ts";

/**
 * What an NBD server serves under one export name: a byte range with read, write and
 * flush. The server has already checked every offset and length against `sizeBytes` and
 * refused writes to a read-only export before calling these, so implementations only do
 * the I/O. Methods may be called concurrently (several connections, and several requests
 * of one connection: the server never runs two overlapping requests of one connection at
 * once when one of them writes); each must be safe so.
 * Failures are thrown as `PresyncError` (`NO_SPACE` becomes `NBD_ENOSPC`, anything else
 * `NBD_EIO`).
 */
export interface NbdExport {
  /** Export name, as clients ask for it (`NBD_OPT_GO`, `NBD_OPT_EXPORT_NAME`). */
  readonly name: string;
  /** Free text shown by `nbdinfo --list`. */
  readonly description?: string;
  /** Size in bytes. */
  readonly sizeBytes: number;
  /** When true, WRITE/TRIM/WRITE_ZEROES get `NBD_EPERM` and are never called here. */
  readonly readOnly: boolean;
  /**
   * True when all connections see one another's writes and a FLUSH on one covers writes
   * completed on all (`NBD_FLAG_CAN_MULTI_CONN`).
   */
  readonly multiConn?: boolean;
  /** Reads `length` bytes at `offset`. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional: reads `into.length` bytes at `offset` into `into`, so the server can read
   * straight into the reply it sends (no copy). Absent: the server calls `read`.
   */
  readInto?(offset: number, into: Uint8Array): Promise<void>;
  /** Writes `data` at `offset`; durable only after `flush`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Makes `length` bytes at `offset` read as zeros, deallocating them where it can unless
   * `options.noHole` (`NBD_CMD_FLAG_NO_HOLE`: the client wants them allocated).
   */
  writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void>;
  /**
   * The client no longer needs these bytes; content afterwards is unspecified (exports
   * that can punch holes make them read as zeros, so a BLOCK_STATUS hole is never stale).
   */
  trim(offset: number, length: number): Promise<void>;
  /** Makes every completed write durable (fsync) before resolving. */
  flush(): Promise<void>;
  /**
   * `base:allocation` status of `[offset, offset + length)`: consecutive extents from
   * `offset`, at least one. Absent: the server reports the whole range as allocated data.
   */
  allocation?(offset: number, length: number): Promise<StatusExtent[]>;
}
