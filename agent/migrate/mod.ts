/**
 * Whole-VM relocation (`presync migrate`): the VM's memory travels with its disk.
 *
 * Glossary:
 * - **migration stream**: the bytes QEMU's `migrate` command writes (RAM pages, device
 *   state), read at the destination by a QEMU started with `-incoming defer` after
 *   `migrate-incoming`; both QEMUs talk to a local unix socket only.
 * - **memory tunnel**: carries a migration stream on a stream of its own in the
 *   authenticated session, at memory priority (after on-demand reads, before bulk), in
 *   records compressed with the session's codec ({@linkcode runMemoryTunnel}); no second
 *   port crosses the WAN.
 * - **switchover**: the moment QEMU pauses the source VM to send its last pages; the final
 *   disk generation is cut then, and the destination's early export switches to it.
 *
 * @module
 */

export {
  type ByteDuplex,
  MAX_TUNNEL_CHUNK_BYTES,
  type MemoryTunnelOptions,
  RecordSplitter,
  runMemoryTunnel,
  type TunnelStats,
} from "./memory_tunnel.ts";
export {
  migrateVm,
  receiveVm,
  type VmMigrationOptions,
  type VmMigrationReport,
} from "./vm_migration.ts";
export { detachCut, DetachedCut, MIGRATION_COPY_FILE } from "./detached_cut.ts";
export { MAX_HEADER_BYTES, readTunnelHeader, writeTunnelHeader } from "./tunnel_header.ts";
export {
  type MigrateReport,
  type MigrateRequest,
  migrateVolume,
  type VolumeMigrationOptions,
} from "./volume_migration.ts";
