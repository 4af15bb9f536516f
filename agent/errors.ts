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
