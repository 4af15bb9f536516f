/**
 * A connection to a Ceph cluster through librados, with bounded timeouts so that a cluster
 * that is down gives a clear, retryable error instead of a hang.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { ceph, cString, PointerOut } from "./_librbd.ts";
import { checkName } from "./_names.ts";
import { Errno, errnoName, rbdError } from "./rbd_error.ts";
import { RbdPool } from "./rbd_pool.ts";

/** Options of {@linkcode RadosCluster.connect}. */
export interface RadosConnectOptions {
  /** The `ceph.conf` to read. Default: librados' search (`$CEPH_CONF`, `/etc/ceph/ceph.conf`). */
  confPath?: string;
  /** The cephx user without `client.` (e.g. `admin`). Default `admin`. */
  clientId?: string;
  /** A keyring file overriding the config's `keyring`. */
  keyringPath?: string;
  /**
   * How long connecting and each monitor command may take before failing with `TIMEOUT`
   * (`client_mount_timeout`, `rados_mon_op_timeout`; whole seconds, rounded up). Default 10 000.
   */
  connectTimeoutMs?: number;
  /**
   * How long one OSD operation (an image read or write) may take before failing with `TIMEOUT`
   * (`rados_osd_op_timeout`; whole seconds, rounded up); 0 waits forever. Default 30 000. A write that timed out may
   * still reach the OSD later: reconnect, and let the exclusive lock fence the old client.
   */
  opTimeoutMs?: number;
  /** More config options, e.g. `{ rbd_cache: "false" }`. */
  config?: Record<string, string>;
}

/** Ceph takes these timeouts in whole seconds: rounded up, so that a timeout never shrinks. */
const seconds = (ms: number) => String(Math.ceil(ms / 1000));

/**
 * A connected cluster. Open pools with {@linkcode openPool}; {@linkcode close} (or `await
 * using`) closes them and their images, then shuts the connection down.
 *
 * @example
 * ```ts ignore
 * await using cluster = await RadosCluster.connect({ confPath: "/etc/ceph/ceph.conf" });
 * await using pool = cluster.openPool("rbd");
 * await pool.createImage("presync-db1", 1 << 30);
 * ```
 */
export class RadosCluster implements AsyncDisposable {
  /** `client.ID@mon_host`, for messages. */
  readonly label: string;
  #handle: Deno.PointerObject | null;
  readonly #pools = new Set<RbdPool>();

  private constructor(handle: Deno.PointerObject, label: string) {
    this.#handle = handle;
    this.label = label;
  }

  /**
   * Reads the config, applies the timeouts and connects (authenticating with cephx when the
   * cluster requires it).
   *
   * @throws {PresyncError} `INVALID_ARGUMENT` for an unreadable config or a bad option,
   *   `TIMEOUT` or `CONNECTION_LOST` (retryable) when the monitors do not answer in time,
   *   `AUTH_FAILED` when cephx refuses the client.
   */
  static async connect(options: RadosConnectOptions = {}): Promise<RadosCluster> {
    const { rados } = ceph();
    const clientId = checkName("client id", options.clientId ?? "admin");
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const opTimeoutMs = options.opTimeoutMs ?? 30_000;
    const out = new PointerOut();
    const created = rados.rados_create2(
      out.bytes,
      cString("ceph"),
      cString(`client.${clientId}`),
      0n,
    );
    if (created < 0) throw rbdError(created, `creating a librados handle for client.${clientId}`);
    const handle = out.pointer!;
    try {
      const conf = options.confPath === undefined ? null : cString(options.confPath);
      const read = rados.rados_conf_read_file(handle, conf);
      if (read < 0) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          `cannot read the Ceph config ${
            options.confPath ?? "($CEPH_CONF or /etc/ceph/ceph.conf)"
          }: ` +
            `${errnoName(read)}; pass the path of a readable ceph.conf`,
        );
      }
      const settings: Record<string, string> = {
        client_mount_timeout: seconds(connectTimeoutMs),
        rados_mon_op_timeout: seconds(connectTimeoutMs),
        rados_osd_op_timeout: seconds(opTimeoutMs),
        // Errors reach the caller as PresyncErrors; librados' own lines would only clutter stderr.
        log_to_stderr: "false",
        err_to_stderr: "false",
        // Writeback from the first write, as in the rbd CLI: the guard keeps the cache
        // write-through for guests that never flush; presync flushes before every snapshot.
        rbd_cache_writethrough_until_flush: "false",
        ...(options.keyringPath === undefined ? {} : { keyring: options.keyringPath }),
        ...options.config,
      };
      for (const [key, value] of Object.entries(settings)) {
        const rc = rados.rados_conf_set(handle, cString(key), cString(value));
        if (rc < 0) {
          throw new PresyncError(
            ErrorCode.INVALID_ARGUMENT,
            `Ceph config option ${key}=${JSON.stringify(value)} was refused: ${errnoName(rc)}`,
          );
        }
      }
      const label = `client.${clientId}@${confValue(handle, "mon_host")}`;
      const rc = await rados.rados_connect(handle);
      if (rc < 0) throw connectError(rc, label, connectTimeoutMs);
      return new RadosCluster(handle, label);
    } catch (err) {
      await rados.rados_shutdown(handle);
      throw err;
    }
  }

  /**
   * Opens pool `name`. Writes to a pool that is full (quota or cluster) fail with `NO_SPACE`
   * instead of waiting for space.
   *
   * @throws {PresyncError} `VOLUME_NOT_FOUND` when the pool does not exist
   */
  openPool(name: string): RbdPool {
    if (this.#handle === null) {
      throw new PresyncError(
        ErrorCode.IO,
        `connection ${this.label} is closed: connect again first`,
      );
    }
    const { rados } = ceph();
    const out = new PointerOut();
    const rc = rados.rados_ioctx_create(this.#handle, cString(checkName("pool", name)), out.bytes);
    if (rc === -Errno.ENOENT) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `Ceph pool ${name} does not exist on ${this.label}: create it (ceph osd pool create ` +
          `${name}; rbd pool init ${name}) or name another pool`,
      );
    }
    if (rc < 0) throw rbdError(rc, `opening pool ${name} on ${this.label}`);
    const ioctx = out.pointer!;
    rados.rados_set_pool_full_try(ioctx);
    const pool = new RbdPool(ioctx, name, () => this.#pools.delete(pool));
    this.#pools.add(pool);
    return pool;
  }

  /** Closes every pool (and image) opened through this connection, then shuts it down. */
  async close(): Promise<void> {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    const errors: unknown[] = [];
    for (const pool of [...this.#pools]) await pool.close().catch((err) => errors.push(err));
    await ceph().rados.rados_shutdown(handle);
    if (errors.length > 0) throw errors[0];
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function confValue(handle: Deno.PointerObject, key: string): string {
  const buffer = new Uint8Array(1024);
  const rc = ceph().rados.rados_conf_get(handle, cString(key), buffer, BigInt(buffer.length));
  if (rc < 0) return "(unknown)";
  const end = buffer.indexOf(0);
  return new TextDecoder().decode(buffer.subarray(0, end < 0 ? buffer.length : end)) || "(none)";
}

function connectError(rc: number, label: string, timeoutMs: number): PresyncError {
  const errno = -rc;
  if (errno === Errno.ETIMEDOUT || errno === Errno.ETIME) {
    return new PresyncError(
      ErrorCode.TIMEOUT,
      `Ceph: connecting ${label} timed out after ${timeoutMs} ms (${errnoName(errno)}): is the ` +
        `cluster up (ceph -s) and mon_host in the config right and reachable from this host?`,
      { retryable: true },
    );
  }
  return rbdError(rc, `connecting ${label}`);
}
