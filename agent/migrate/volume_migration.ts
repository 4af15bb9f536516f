import type { Codec } from "../codec/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { errorFromReply } from "../net/sync_protocol.ts";
import { QmpClient } from "../qemu/mod.ts";
import { Priority } from "../wire/frame.ts";
import type { Session } from "../wire/session.ts";
import { readTunnelHeader, writeTunnelHeader } from "./tunnel_header.ts";
import { migrateVm } from "./vm_migration.ts";

/** How long the destination has to accept a migration, ms. */
const ACCEPT_TIMEOUT_MS = 30_000;

/** What `presync migrate` asks of the agent. */
export interface MigrateRequest {
  /** The source VM's QMP socket. */
  qmp: string;
  /** Most time for the whole migration, seconds (default 600). */
  timeoutSeconds?: number;
  /** QEMU's migration bandwidth cap, bytes/s (default: unlimited). */
  maxBandwidthBytesPerSecond?: number;
}

/** What `presync migrate` reports. */
export interface MigrateReport {
  volume: string;
  /** From the request to the final generation committed and verified, seconds. */
  totalSeconds: number;
  /** From the request until QEMU completed the memory migration, seconds. */
  memorySeconds: number;
  /** QEMU's `downtime` (the source VM paused until its last state left), ms. */
  qemuDowntimeMs: number;
  /** Of that pause, the final disk cut taken at the switchover, ms. */
  switchoverMs: number;
  /** RAM bytes QEMU sent, and the bytes the memory stream took on the link. */
  memoryBytes: number;
  memoryWireBytes: number;
  /** Bytes of disk sent from the request to the final commit (the final generation). */
  diskBytes: number;
  /** The final generation and whether its Merkle root was verified. */
  generation: number;
  verified: boolean;
}

/** What {@linkcode migrateVolume} needs of the agent. */
export interface VolumeMigrationOptions {
  volume: string;
  session: Session;
  /** The session's codec. */
  codec: Codec;
  /** Codecs to decode what comes back. */
  codecs: readonly Codec[];
  request: MigrateRequest;
  /** Where the migration's steps are logged (see `VmMigrationOptions.log`). */
  log?: Logger;
  /**
   * Starts the volume's evacuation without its hook (the VM is paused by the migration):
   * `finalCut` resolves once the final generation is cut (its `begin` goes out next),
   * `done` with the evacuation's report (committed and verified). No block is sent before
   * `sendAfter` settles: the memory's last bytes are on the link by then, and blocks sent
   * earlier would delay them (and the VM's resume at the destination) in the link's buffers.
   */
  evacuate(sendAfter: Promise<void>): {
    finalCut: Promise<unknown>;
    done: Promise<{ bytesSent: number; generation: number; verified: boolean }>;
  };
}

/**
 * `presync migrate VOL` at the source: opens a memory stream on the session to the
 * destination (which must have an early export with `--incoming` for the volume), migrates
 * the VM's memory over it and, at the switchover, cuts the final generation; resolves once
 * QEMU completed and the final generation committed and verified.
 *
 * @throws {PresyncError} `MIGRATION_ABORTED` when the migration failed before QEMU completed:
 *   the source VM runs on (see {@linkcode migrateVm}); the evacuation's error when the final
 *   generation failed after the VM moved
 */
export async function migrateVolume(options: VolumeMigrationOptions): Promise<MigrateReport> {
  const started = performance.now();
  const { session, volume } = options;
  const stream = session.openStream(Priority.MEMORY);
  let evacuation: ReturnType<VolumeMigrationOptions["evacuate"]> | undefined;
  const dir = await Deno.makeTempDir({ prefix: "presync-migrate-" });
  // Settles once the memory's last bytes left (or the migration ended without them).
  const memorySent = Promise.withResolvers<void>();
  try {
    await writeTunnelHeader(stream.writable, { volume });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const { header, rest } = await Promise.race([
      readTunnelHeader(stream.readable),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() =>
          reject(
            new PresyncError(
              ErrorCode.TIMEOUT,
              `the destination did not accept the migration of ${volume} within ` +
                `${ACCEPT_TIMEOUT_MS / 1000} s`,
            ),
          ), ACCEPT_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    if (header.ok !== true) throw errorFromReply(header, "destination");
    await using qmp = await QmpClient.connect(options.request.qmp);
    const vm = await migrateVm({
      qmp,
      socketPath: `${dir}/qemu.sock`,
      remote: { readable: rest, writable: stream.writable },
      tunnel: {
        codec: options.codec,
        codecs: options.codecs,
        linkClosed: session.closed,
        onSendEnded: memorySent.resolve,
      },
      timeoutMs: (options.request.timeoutSeconds ?? 600) * 1000,
      maxBandwidthBytesPerSecond: options.request.maxBandwidthBytesPerSecond,
      log: options.log,
      switchover: async () => {
        evacuation = options.evacuate(memorySent.promise);
        evacuation.done.catch(() => {});
        await Promise.race([evacuation.finalCut, evacuation.done]);
      },
    });
    memorySent.resolve();
    const memorySeconds = (performance.now() - started) / 1000;
    if (!evacuation) {
      throw new PresyncError(
        ErrorCode.MIGRATION_ABORTED,
        "QEMU completed without a switchover (pause-before-switchover ignored?)",
      );
    }
    const disk = await evacuation.done;
    return {
      volume,
      totalSeconds: (performance.now() - started) / 1000,
      memorySeconds,
      qemuDowntimeMs: vm.qemuDowntimeMs,
      switchoverMs: Math.round(vm.switchoverMs),
      memoryBytes: vm.memoryBytes,
      memoryWireBytes: vm.tunnel.sentWireBytes,
      diskBytes: disk.bytesSent,
      generation: disk.generation,
      verified: disk.verified,
    };
  } catch (err) {
    stream.reset();
    throw err;
  } finally {
    memorySent.resolve();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
