import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { QmpClient } from "../qemu/qmp_client.ts";
import {
  type ByteDuplex,
  type MemoryTunnelOptions,
  runMemoryTunnel,
  type TunnelStats,
} from "./memory_tunnel.ts";

/** How long the destination QEMU has to open its incoming socket (it may still start), ms. */
const CONNECT_TIMEOUT_MS = 20_000;

/**
 * How often `query-migrate` is polled at most, ms; QEMU's `MIGRATION` events (status
 * changes) wake the poll at once, so the switchover is not up to a period late.
 */
const POLL_MS = 50;

/** Options of {@linkcode migrateVm}. */
export interface VmMigrationOptions {
  /** QMP of the source VM's QEMU. */
  qmp: QmpClient;
  /** The unix socket presync listens on for the source QEMU's migration stream (local only). */
  socketPath: string;
  /** The memory stream to the destination, once it accepted the migration. */
  remote: ByteDuplex;
  /** Codec options of the tunnel (the session's codec). */
  tunnel: Omit<MemoryTunnelOptions, "signal">;
  /**
   * Called at the switchover, with the source VM paused by the migration and before its last
   * device state leaves: cut the final disk generation and resolve once the destination has
   * it announced (its early export serves it). A rejection cancels the migration.
   */
  switchover(): Promise<void>;
  /** Most time for the whole migration, ms (default 10 min). */
  timeoutMs?: number;
  /** QEMU's `max-bandwidth` for the migration, bytes/s (default: QEMU's). */
  maxBandwidthBytesPerSecond?: number;
  /**
   * Where the steps of the switchover are logged (`migration_step`: `pre-switchover` with
   * QEMU's last estimates, `final-cut`, `continued`, `completed`, `figures` with QEMU's final
   * ones, `tunnel-ended` with the tunnel's counters), so the guest's pause can be laid out on
   * one clock with QEMU's events.
   */
  log?: Logger;
}

/** What a finished migration measured. */
export interface VmMigrationReport {
  /** From `migrate` to `completed`, ms (presync's clock). */
  totalMs: number;
  /** QEMU's `downtime`: the source VM paused until the stream's end, ms. */
  qemuDowntimeMs: number;
  /** The switchover callback's share of the pause (cutting the final generation), ms. */
  switchoverMs: number;
  /** RAM bytes QEMU sent (`ram.transferred`). */
  memoryBytes: number;
  /** The tunnel's counters (raw and on the wire). */
  tunnel: TunnelStats;
}

interface MigrationInfo {
  status?: string;
  downtime?: number;
  "expected-downtime"?: number;
  ram?: { transferred?: number; remaining?: number; mbps?: number; "downtime-bytes"?: number };
  "error-desc"?: string;
}

/**
 * Migrates the source VM's memory to the destination through the memory tunnel: listens on
 * `socketPath`, has QEMU `migrate` to it with `pause-before-switchover`, carries the stream on
 * `remote`, and at the switchover (VM paused) calls `switchover` before letting QEMU send the
 * last device state (`migrate-continue`). The destination QEMU can only start once that last
 * state arrived, so the disk's final cut always exists before the VM runs there.
 *
 * A VM runs in exactly one place: on any failure before QEMU reports `completed` — the
 * tunnel cut, `switchover` failing, the timeout — the migration is cancelled and the source VM
 * resumed (`cont`) if it is paused, and this rejects with `MIGRATION_ABORTED`; the destination
 * QEMU never got its last device state, so it never ran (QEMU ends an incoming migration
 * whose stream broke). After `completed` the source stays paused (`postmigrate`).
 */
export async function migrateVm(options: VmMigrationOptions): Promise<VmMigrationReport> {
  const { qmp } = options;
  const step = (name: string, fields: Record<string, unknown> = {}) =>
    options.log?.("info", "migration_step", { step: name, ...fields });
  const started = performance.now();
  const deadline = started + (options.timeoutMs ?? 600_000);
  const stop = new AbortController();
  await Deno.remove(options.socketPath).catch(() => {});
  const listener = Deno.listen({ transport: "unix", path: options.socketPath });
  let tunnel: Promise<TunnelStats> | undefined;
  let wasRunning = false;
  let wake: (() => void) | null = null;
  const unsubscribe = qmp.onEvent((event) => {
    if (event.event === "MIGRATION") wake?.();
  });
  try {
    wasRunning = ((await qmp.execute("query-status")) as { running?: boolean }).running === true;
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "pause-before-switchover", state: true },
        { capability: "events", state: true },
      ],
    });
    if (options.maxBandwidthBytesPerSecond) {
      await qmp.execute("migrate-set-parameters", {
        "max-bandwidth": options.maxBandwidthBytesPerSecond,
      });
    }
    const accepted = listener.accept();
    await qmp.execute("migrate", { uri: `unix:${options.socketPath}` });
    const conn = await withDeadline(accepted, deadline, "the source QEMU to connect");
    listener.close();
    tunnel = runMemoryTunnel(conn, options.remote, { ...options.tunnel, signal: stop.signal });
    tunnel.catch(() => {});
    let switchoverMs = 0;
    let last: MigrationInfo = {};
    while (true) {
      const info = (await qmp.execute("query-migrate")) as MigrationInfo;
      if (info.status === "pre-switchover") {
        // What QEMU last estimated while the VM ran: its bandwidth and the pause it expected.
        step("pre-switchover", {
          mbps: last.ram?.mbps,
          expectedDowntimeMs: last["expected-downtime"],
          remainingBytes: last.ram?.remaining,
        });
        const at = performance.now();
        await options.switchover();
        switchoverMs = performance.now() - at;
        step("final-cut", { ms: Math.round(switchoverMs) });
        await qmp.execute("migrate-continue", { state: "pre-switchover" });
        step("continued");
      } else if (info.status === "completed") {
        const totalMs = performance.now() - started;
        step("completed");
        const stats = await withDeadline(tunnel, deadline, "the tunnel to end");
        step("tunnel-ended", { ...stats });
        const final = await completedFigures(qmp, info);
        step("figures", {
          downtimeMs: final.downtime,
          downtimeBytes: final.ram?.["downtime-bytes"],
          mbps: final.ram?.mbps,
        });
        return {
          totalMs,
          qemuDowntimeMs: final.downtime ?? 0,
          switchoverMs,
          memoryBytes: final.ram?.transferred ?? 0,
          tunnel: stats,
        };
      } else if (info.status === "failed" || info.status === "cancelled") {
        const why = await tunnel.then(() => info["error-desc"] ?? info.status, (e) => String(e));
        throw new PresyncError(
          ErrorCode.MIGRATION_ABORTED,
          `QEMU's migration ${info.status}: ${why}`,
        );
      }
      last = info;
      if (performance.now() > deadline) {
        throw new PresyncError(
          ErrorCode.TIMEOUT,
          `the migration did not complete within ${
            Math.round((options.timeoutMs ?? 600_000) / 1000)
          } s ` +
            `(status ${info.status})`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = null;
    }
  } catch (err) {
    stop.abort(err);
    await qmp.execute("migrate_cancel").catch(() => {});
    // QEMU resumes a VM whose migration failed; make sure, whatever state it stopped in.
    if (wasRunning) await resumeWhenPaused(qmp);
    await tunnel?.catch(() => {});
    throw err instanceof PresyncError && err.code === ErrorCode.MIGRATION_ABORTED
      ? err
      : new PresyncError(
        ErrorCode.MIGRATION_ABORTED,
        `the VM's migration stopped: ${err instanceof Error ? err.message : err}; ` +
          `the source VM runs on`,
        { cause: err },
      );
  } finally {
    unsubscribe();
    try {
      listener.close();
    } catch {
      // Closed once the source QEMU connected.
    }
    await Deno.remove(options.socketPath).catch(() => {});
  }
}

/**
 * QEMU's final figures of a completed migration: right at the `completed` event QEMU has not
 * set `downtime` yet (it reads 0), so ask again for a short while until it is there.
 */
async function completedFigures(qmp: QmpClient, info: MigrationInfo): Promise<MigrationInfo> {
  for (let i = 0; i < 20 && !info.downtime; i++) {
    await new Promise((r) => setTimeout(r, 10));
    info = (await qmp.execute("query-migrate")) as MigrationInfo;
  }
  return info;
}

/** `cont` once the cancelled migration has settled, unless the VM already runs. */
async function resumeWhenPaused(qmp: QmpClient): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const info = (await qmp.execute("query-migrate")) as MigrationInfo;
    if (
      info.status !== "cancelling" && info.status !== "active" && info.status !== "pre-switchover"
    ) break;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  const status = (await qmp.execute("query-status")) as { running?: boolean };
  if (!status.running) await qmp.execute("cont");
}

async function withDeadline<T>(promise: Promise<T>, deadline: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new PresyncError(ErrorCode.TIMEOUT, `timed out waiting for ${what}`)),
          Math.max(0, deadline - performance.now()),
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The destination's end of a migration: connects to the destination QEMU's incoming socket
 * (`-incoming unix:PATH`, where QEMU listens) and carries the stream from `remote` to it.
 * Resolves when both directions ended; rejects with `MIGRATION_ABORTED` (the destination
 * QEMU, missing the end of the stream, ends its incoming migration and never runs).
 */
export async function receiveVm(
  incomingPath: string,
  remote: ByteDuplex,
  tunnel: MemoryTunnelOptions,
): Promise<TunnelStats> {
  let conn: Deno.UnixConn;
  try {
    conn = await connectRetrying(incomingPath, CONNECT_TIMEOUT_MS);
  } catch (err) {
    remote.readable.cancel(err).catch(() => {});
    remote.writable.abort(err).catch(() => {});
    throw new PresyncError(
      ErrorCode.MIGRATION_ABORTED,
      `cannot reach the destination QEMU's incoming socket ${incomingPath} (${err}); start it ` +
        `with -incoming unix:${incomingPath}`,
      { cause: err },
    );
  }
  return await runMemoryTunnel(conn, remote, tunnel);
}

/** Connects to a unix socket, retrying while it does not exist or refuses (QEMU starting). */
async function connectRetrying(path: string, timeoutMs: number): Promise<Deno.UnixConn> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (err) {
      const starting = err instanceof Deno.errors.NotFound ||
        err instanceof Deno.errors.ConnectionRefused;
      if (!starting || performance.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
