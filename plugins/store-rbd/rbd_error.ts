/**
 * Turns the negative errno values librados and librbd return into {@linkcode PresyncError}s
 * that name the operation, the errno and what a sysadmin can do about it.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";

/** Linux errno values librados and librbd return (negated) that this module distinguishes. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ETIME: 62,
  EOPNOTSUPP: 95,
  ENOTCONN: 107,
  /** What Ceph returns to a client the cluster has blocklisted. */
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
  EDQUOT: 122,
  ECANCELED: 125,
} as const;

const NAME_OF = new Map<number, string>(Object.entries(Errno).map(([name, n]) => [n, name]));

/** `ENOENT` for 2 (or -2); `errno 4242` for a value this module does not name. */
export function errnoName(errno: number): string {
  return NAME_OF.get(Math.abs(errno)) ?? `errno ${Math.abs(errno)}`;
}

interface Meaning {
  code: ErrorCode;
  retryable: boolean;
  /** What the errno means here and what to do, appended to the operation. */
  advice: string;
}

function meaning(errno: number): Meaning {
  const fatal = (code: ErrorCode, advice: string) => ({ code, retryable: false, advice });
  const retry = (code: ErrorCode, advice: string) => ({ code, retryable: true, advice });
  switch (errno) {
    case Errno.ENOENT:
      return fatal(
        ErrorCode.VOLUME_NOT_FOUND,
        "it does not exist; check the pool, image and snapshot names (rbd ls POOL, rbd snap ls POOL/IMAGE)",
      );
    case Errno.EEXIST:
      return fatal(
        ErrorCode.VOLUME_EXISTS,
        "it already exists; pick another name or remove it first",
      );
    case Errno.ENOSPC:
      return retry(
        ErrorCode.NO_SPACE,
        "the Ceph cluster is full; add OSD capacity or delete data (ceph df), then retry",
      );
    case Errno.EDQUOT:
      return retry(
        ErrorCode.NO_SPACE,
        "the pool's quota is reached; raise it (ceph osd pool set-quota POOL max_bytes N) or free space in the pool, then retry",
      );
    case Errno.ETIMEDOUT:
    case Errno.ETIME:
      return retry(
        ErrorCode.TIMEOUT,
        "Ceph did not answer within the operation timeout (rados_osd_op_timeout); check that the cluster is up (ceph -s) and reachable from this host",
      );
    case Errno.ENOTCONN:
    case Errno.ECONNREFUSED:
    case Errno.EHOSTUNREACH:
      return retry(
        ErrorCode.CONNECTION_LOST,
        "the Ceph cluster cannot be reached; check mon_host in the config file and that the monitors run (ceph -s)",
      );
    case Errno.ESHUTDOWN:
      return retry(
        ErrorCode.CONNECTION_LOST,
        "the cluster blocklisted this client (another client broke its lock, or it was evicted); reconnect",
      );
    case Errno.EACCES:
    case Errno.EPERM:
      return fatal(
        ErrorCode.AUTH_FAILED,
        "Ceph refused this client; check the keyring and the client's caps (ceph auth get client.ID)",
      );
    case Errno.EINVAL:
    case Errno.ERANGE:
    case Errno.ENAMETOOLONG:
    case Errno.EFBIG:
      return fatal(
        ErrorCode.INVALID_ARGUMENT,
        "Ceph rejected an argument (an offset or size outside the image, or a bad name)",
      );
    case Errno.EOPNOTSUPP:
    case Errno.ENOSYS:
      return fatal(
        ErrorCode.INVALID_ARGUMENT,
        "this Ceph does not support the operation (image format or feature missing)",
      );
    case Errno.EROFS:
      return fatal(
        ErrorCode.IO,
        "the image is read-only here: opened read-only or at a snapshot, or another client holds its exclusive lock",
      );
    case Errno.EBUSY:
      return fatal(
        ErrorCode.IO,
        "the image is busy: open in another client (rbd status POOL/IMAGE) or a snapshot is protected",
      );
    case Errno.ENOTEMPTY:
      return fatal(
        ErrorCode.IO,
        "the image still has snapshots; remove them first (rbd snap purge POOL/IMAGE)",
      );
    case Errno.EAGAIN:
    case Errno.ECANCELED:
    case Errno.ENOMEM:
      return retry(ErrorCode.IO, "a transient failure; retry");
    default:
      return fatal(ErrorCode.IO, "see the Ceph client log for details");
  }
}

/**
 * The error for a librados/librbd call that returned `result` (a negative errno), with `what`
 * naming the operation and its target, e.g. `write to rbd/presync-db1 at offset 4096`.
 *
 * @example
 * ```ts
 * import { rbdError } from "./rbd_error.ts";
 * const err = rbdError(-122, "write to rbd/presync-db1 at offset 0");
 * console.assert(err.code === "NO_SPACE" && err.retryable);
 * ```
 */
export function rbdError(result: number, what: string): PresyncError {
  const errno = Math.abs(result);
  const { code, retryable, advice } = meaning(errno);
  return new PresyncError(code, `Ceph: ${what} failed with ${errnoName(errno)}: ${advice}`, {
    retryable,
  });
}

/** Throws {@linkcode rbdError} when `result` is negative; returns it otherwise. */
export function check(result: number | bigint, what: string): number {
  const value = Number(result);
  if (value < 0) throw rbdError(value, what);
  return value;
}
