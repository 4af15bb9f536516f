import { ErrorCode, PresyncError } from "../errors.ts";

/** Process exit codes of the `presync` command. Stable: scripts depend on them. */
export const ExitCode = {
  OK: 0,
  /** Any failure not listed below. */
  FAILURE: 1,
  /** Bad command line or configuration (a config file, an address already in use). */
  USAGE: 2,
  /** A replica does not match its source or expected root. */
  VERIFY_MISMATCH: 3,
  /** The peer refused our key, or we refused theirs. */
  AUTH_FAILED: 4,
  /** The peer (destination, agent or daemon) could not be reached. */
  UNREACHABLE: 5,
} as const;

/** The exit code for an error. */
export function exitCodeFor(err: unknown): number {
  if (!(err instanceof PresyncError)) return ExitCode.FAILURE;
  switch (err.code) {
    case ErrorCode.INVALID_ARGUMENT:
    case ErrorCode.INVALID_VOLUME_NAME:
    case ErrorCode.ADDRESS_IN_USE:
    case ErrorCode.PLUGIN_UNKNOWN:
      return ExitCode.USAGE;
    case ErrorCode.VERIFY_MISMATCH:
      return ExitCode.VERIFY_MISMATCH;
    case ErrorCode.AUTH_FAILED:
    case ErrorCode.PEER_UNTRUSTED:
      return ExitCode.AUTH_FAILED;
    case ErrorCode.CONNECTION_LOST:
    case ErrorCode.LINK_DEAD:
    case ErrorCode.TIMEOUT:
      return ExitCode.UNREACHABLE;
    default:
      return ExitCode.FAILURE;
  }
}
