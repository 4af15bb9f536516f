import { ErrorCode, PresyncError } from "../errors.ts";

/**
 * Wraps a failed file operation in a {@linkcode PresyncError}: `NO_SPACE` for a full disk,
 * `IO` otherwise, with `what` saying which operation on which path. A PresyncError passes
 * through unchanged.
 */
export function toIoError(err: unknown, what: string): PresyncError {
  if (err instanceof PresyncError) return err;
  const text = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string })?.code;
  if (code === "ENOSPC" || /No space left on device|os error 28/.test(text)) {
    return new PresyncError(
      ErrorCode.NO_SPACE,
      `${what}: the disk is full (${text}); free space or move the store, then resume`,
      { cause: err, retryable: true },
    );
  }
  return new PresyncError(ErrorCode.IO, `${what}: ${text}`, { cause: err });
}

/** Runs `fn`, converting a thrown error with {@linkcode toIoError}. */
export async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toIoError(err, what);
  }
}
