import { ErrorCode, PresyncError } from "../errors.ts";

/**
 * Errors of the connection itself after which retrying cannot help and no volume can sync:
 * the agent stops and says why (a wrong key, an untrusted server, another protocol version).
 */
const PROCESS_FATAL = new Set<ErrorCode>([
  ErrorCode.AUTH_FAILED,
  ErrorCode.PEER_UNTRUSTED,
  ErrorCode.PROTOCOL_VERSION,
]);

/** Whether `error`, met while connecting, must stop the whole agent. */
export function isProcessFatal(error: PresyncError): boolean {
  return PROCESS_FATAL.has(error.code);
}

/** Any thrown value as a `PresyncError`; an unknown one counts as a retryable link error. */
export function asPresyncError(err: unknown): PresyncError {
  if (err instanceof PresyncError) return err;
  return new PresyncError(ErrorCode.CONNECTION_LOST, String(err), { retryable: true, cause: err });
}

/** What to do about a volume's fault besides what its message says. */
const FIXES: Partial<Record<ErrorCode, string>> = {
  [ErrorCode.VOLUME_MISMATCH]: "the image or the replica is not the volume this state was set up " +
    "for (resized or replaced?): to sync it as a new volume, stop the agent, remove the " +
    "volume's state directory and the destination's replica, then start the agent (a full sync)",
  [ErrorCode.VOLUME_HELD]: "stop the other agent named in the message (two agents must not sync " +
    "one volume), then run `presync resume VOLUME` here",
  [ErrorCode.SOURCE_STATE_STALE]: "see the message: the state directory cannot be trusted",
  [ErrorCode.PROTOCOL_VIOLATION]: "the destination runs another presync version or is faulty: " +
    "run the same version on both sides, then `presync resume VOLUME`",
  [ErrorCode.STORE_CORRUPT]: "the file named in the message is damaged; restore it or resync " +
    "the volume in full",
};

/**
 * What a parked volume's log line adds to its error: how to fix it and how to go on
 * (`presync resume VOLUME` retries a parked volume; so does restarting the agent).
 */
export function faultFix(error: PresyncError, volume: string): string {
  const fix = FIXES[error.code] ?? "fix the cause named in the message, then run " +
      "`presync resume VOLUME` (or restart the agent)";
  return fix.replaceAll("VOLUME", volume);
}
