/**
 * The one error type of presync. Callers branch on {@linkcode PresyncError.code}, never on
 * message text; {@linkcode PresyncError.retryable} tells the sync loop and the CLI whether
 * trying again (after a reconnect or a backoff) can help.
 *
 * @module
 */

/** Stable error codes. Add new codes at the end; never rename or reuse one. */
export const ErrorCode = {
  /** A caller passed an argument outside its documented range. */
  INVALID_ARGUMENT: "INVALID_ARGUMENT",
  /** The WebAssembly core could not be loaded or ran out of memory. */
  WASM_CORE: "WASM_CORE",
  /** A serialized bitmap is malformed. */
  BITMAP_MALFORMED: "BITMAP_MALFORMED",
  /** A compressed block frame is malformed, truncated or does not decode to its length. */
  FRAME_MALFORMED: "FRAME_MALFORMED",
  /** A codec name or id is not known to this build. */
  CODEC_UNKNOWN: "CODEC_UNKNOWN",
  /** A volume name is empty, too long or has characters not allowed in names. */
  INVALID_VOLUME_NAME: "INVALID_VOLUME_NAME",
  /** Source and destination disagree on a volume's identity (uuid, size, block size). */
  VOLUME_MISMATCH: "VOLUME_MISMATCH",
  /** No volume of that name exists in the store or state directory. */
  VOLUME_NOT_FOUND: "VOLUME_NOT_FOUND",
  /** A volume of that name already exists. */
  VOLUME_EXISTS: "VOLUME_EXISTS",
  /** On-disk state (meta, manifest, staging log, commit record) is damaged. */
  STORE_CORRUPT: "STORE_CORRUPT",
  /** A block's bytes do not match the hash it came with; it was not staged. */
  BLOCK_HASH_MISMATCH: "BLOCK_HASH_MISMATCH",
  /** A generation number or block set is not the one expected at this point. */
  GENERATION_MISMATCH: "GENERATION_MISMATCH",
  /** A replica does not match the source or the expected Merkle root. */
  VERIFY_MISMATCH: "VERIFY_MISMATCH",
  /** The destination disk is full. */
  NO_SPACE: "NO_SPACE",
  /** An I/O operation failed (file missing, permission, device error). */
  IO: "IO",
  /** The peer could not prove knowledge of the pre-shared key (or a transcript was replayed). */
  AUTH_FAILED: "AUTH_FAILED",
  /** The peer speaks a session-protocol version this build does not. */
  PROTOCOL_VERSION: "PROTOCOL_VERSION",
  /** The peer sent bytes that break the session protocol (bad hello, unknown frame, bad field). */
  PROTOCOL_VIOLATION: "PROTOCOL_VIOLATION",
  /** A session frame declares a payload longer than the agreed maximum frame size. */
  FRAME_TOO_LARGE: "FRAME_TOO_LARGE",
  /** A session frame's integrity tag does not match: the bytes were corrupted in flight. */
  FRAME_CORRUPT: "FRAME_CORRUPT",
  /** The peer sent more stream data than the flow-control window it was granted. */
  FLOW_CONTROL: "FLOW_CONTROL",
  /** The transport connection closed or failed before the session ended cleanly. */
  CONNECTION_LOST: "CONNECTION_LOST",
  /** Nothing was received from the peer within the keepalive idle timeout. */
  LINK_DEAD: "LINK_DEAD",
  /** The peer is shutting the session down (GOAWAY); no new streams may be opened. */
  GOING_AWAY: "GOING_AWAY",
  /** The stream was reset by the peer or by the local side before it finished. */
  STREAM_RESET: "STREAM_RESET",
  /** The session was already closed locally when an operation was attempted. */
  SESSION_CLOSED: "SESSION_CLOSED",
  /** The peer's certificate does not match the pinned fingerprint or CA. */
  PEER_UNTRUSTED: "PEER_UNTRUSTED",
  /** A handshake or connection attempt did not finish within its timeout. */
  TIMEOUT: "TIMEOUT",
  /** An NBD server refused an option or a request (its NBD error value is in the message). */
  NBD_REQUEST_FAILED: "NBD_REQUEST_FAILED",
  /** The replica is exported to a VM at the destination: it must not change under it. */
  VOLUME_EXPORTED: "VOLUME_EXPORTED",
  /** QEMU answered a QMP command with an error (its error class and text are in the message). */
  QMP_COMMAND_FAILED: "QMP_COMMAND_FAILED",
  /** A dirty bitmap presync relies on was removed from QEMU or became unusable. */
  QEMU_BITMAP_LOST: "QEMU_BITMAP_LOST",
  /**
   * A control socket or its directory could be controlled by another user (a symlink, a file
   * planted at the socket's path, a directory others can write or that someone else owns).
   */
  CONTROL_UNSAFE: "CONTROL_UNSAFE",
  /** An address or socket path to listen on is taken (by another presync, or another program). */
  ADDRESS_IN_USE: "ADDRESS_IN_USE",
  /** Another live source agent syncs this volume (two agents with one state: split brain). */
  VOLUME_HELD: "VOLUME_HELD",
  /** The source's state is older than the destination's replica (restored from a backup?). */
  SOURCE_STATE_STALE: "SOURCE_STATE_STALE",
  /** The volume was evacuated: it no longer syncs from this agent until it is restarted. */
  VOLUME_EVACUATED: "VOLUME_EVACUATED",
  /** The replica is seeding its first generation: there is nothing committed to serve yet. */
  VOLUME_INITIALISING: "VOLUME_INITIALISING",
  /** The volume is in use (a source connected, an export, another process) or being deleted. */
  STORE_BUSY: "STORE_BUSY",
  /**
   * A handshake record failed its checksum: the bytes were corrupted in flight (not a wrong
   * key). Retryable: the client reconnects with backoff.
   */
  HANDSHAKE_CORRUPT: "HANDSHAKE_CORRUPT",
  /** Configuration names a plugin (tracker, transport, codec, store) this build does not have. */
  PLUGIN_UNKNOWN: "PLUGIN_UNKNOWN",
  /**
   * A VM's memory migration (`presync migrate`) stopped before it finished: the link was cut,
   * a QEMU ended, or the tunnel carried a malformed record. The source VM keeps running.
   */
  MIGRATION_ABORTED: "MIGRATION_ABORTED",
  /**
   * A fail-back was refused: the original site's image is not the generation the other site
   * holds (it was written after the relocation, or the relocation did not finish), so only
   * a full re-sync (`presync failback --full`) can bring it back.
   */
  FAILBACK_DIVERGED: "FAILBACK_DIVERGED",
  /**
   * A writable export's overlay was written over another generation of the replica than the
   * one it would now be laid over (the replica was synced again since): refused, since its
   * blocks would mix two disks.
   */
  OVERLAY_STALE: "OVERLAY_STALE",
  /**
   * A worker thread of the agent (e.g. a scan worker reading the image) stopped with an
   * error; the operation it served failed and may be run again.
   */
  WORKER_FAILED: "WORKER_FAILED",
} as const;

/** One of the {@linkcode ErrorCode} values. */
export type ErrorCode = typeof ErrorCode[keyof typeof ErrorCode];

/** Options of {@linkcode PresyncError}. */
export interface PresyncErrorOptions {
  /** The lower-level error this one wraps. */
  cause?: unknown;
  /** True when the same operation may succeed if tried again later. Default false. */
  retryable?: boolean;
}

/**
 * An error with a stable code and a message a sysadmin understands: what was expected,
 * what was received, and what to do.
 *
 * @example
 * ```ts
 * import { PresyncError } from "./errors.ts";
 * const err = new PresyncError("INVALID_ARGUMENT", "block size must be > 0: received 0");
 * console.assert(err.code === "INVALID_ARGUMENT" && !err.retryable);
 * ```
 */
export class PresyncError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCode;
  /** Whether retrying can help (link errors) or not (bad input, corruption of local state). */
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: PresyncErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "PresyncError";
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** Throws an `INVALID_ARGUMENT` error unless `value` is an integer in `[min, max]`. */
export function assertInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${name} must be an integer from ${min} to ${max}: received ${value}`,
    );
  }
}
