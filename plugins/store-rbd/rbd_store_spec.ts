/**
 * The `--store rbd:POOL[?conf=PATH&id=CLIENT&keyring=PATH]` value: which pool, which
 * `ceph.conf`, which cephx user.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { checkName } from "./_names.ts";

/** What an `rbd:` store value names. */
export interface RbdStoreSpec {
  /** The RADOS pool holding the replicas' images. */
  pool: string;
  /** The `ceph.conf` to read (default: librados' search). */
  confPath?: string;
  /** The cephx user without `client.` (default `admin`). */
  clientId?: string;
  /** A keyring file overriding the config's. */
  keyringPath?: string;
}

/** Prefix of a store value that names an RBD pool. */
export const RBD_STORE_PREFIX = "rbd:";

const KEYS = { conf: "confPath", id: "clientId", keyring: "keyringPath" } as const;

/**
 * Parses `rbd:POOL[?conf=PATH&id=CLIENT&keyring=PATH]`.
 *
 * @example
 * ```ts
 * import { parseRbdStoreSpec } from "./rbd_store_spec.ts";
 * const spec = parseRbdStoreSpec("rbd:replicas?conf=/etc/ceph/dr.conf&id=presync");
 * console.assert(spec.pool === "replicas" && spec.clientId === "presync");
 * ```
 * @throws {PresyncError} `INVALID_ARGUMENT` naming the part that is wrong
 */
export function parseRbdStoreSpec(value: string): RbdStoreSpec {
  if (!value.startsWith(RBD_STORE_PREFIX)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `an RBD store is rbd:POOL[?conf=PATH&id=CLIENT&keyring=PATH]: received ${
        JSON.stringify(value)
      }`,
    );
  }
  const rest = value.slice(RBD_STORE_PREFIX.length);
  const at = rest.indexOf("?");
  const pool = at < 0 ? rest : rest.slice(0, at);
  const spec: RbdStoreSpec = { pool: checkName("pool", pool) };
  if (at < 0) return spec;
  for (const [key, text] of new URLSearchParams(rest.slice(at + 1))) {
    if (!(key in KEYS)) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `rbd store option ${JSON.stringify(key)} is unknown: expected conf, id or keyring ` +
          `(${value})`,
      );
    }
    if (text === "") {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `rbd store option ${key} needs a value (${value})`,
      );
    }
    spec[KEYS[key as keyof typeof KEYS]] = key === "id" ? checkName("client id", text) : text;
  }
  return spec;
}
