/**
 * The plugin contracts, in one place: the small interfaces the core talks to, each with its
 * own data types, whose implementations live in `plugins/<kind>-<name>/` and are named in
 * `agent/registry/`. The core imports a contract, never a plugin's internals. The files stay
 * where they are (beside the code that calls them); this index makes them visible together.
 *
 * Glossary:
 * - **tracker** ({@linkcode Tracker}, {@linkcode Cut}; `agent/tracker.ts`): finds which blocks
 *   of a source volume changed and reads them. `cut()` once per generation; `resume()` after a
 *   restart; `Cut.read` may be retried in any order; `release`/`close` are idempotent.
 * - **transport** ({@linkcode Transport}, {@linkcode ByteChannel}; `agent/wire/transport.ts`):
 *   opens and accepts reliable byte channels. A failed `connect` leaves nothing open, so
 *   retrying is safe; an unreachable peer is `CONNECTION_LOST` (retryable).
 * - **codec** ({@linkcode Codec}; `agent/codec/codec.ts`): compresses block payloads; pure,
 *   every call independent; decoding is bounded by the raw length.
 * - **destination** ({@linkcode Destination}; `agent/sync/destination.ts`): what the
 *   generation sender talks to (local store or remote session): begin, stage, commit; every
 *   step may be retried after a reconnect (resume info says what is already staged).
 * - **replica back end** ({@linkcode ReplicaBackend}, {@linkcode VolumeBackend};
 *   `agent/store/replica_backend.ts`): where a destination's replica bytes live; the commit
 *   protocol stays in `agent/store/`.
 * - **VM hook**: the evacuation's pause of the VM, either a shell command
 *   ({@linkcode runEvacuateHook}, `--evacuate-hook CMD`) or QMP ({@linkcode VmControl}).
 * - **file system** ({@linkcode FileSystem}; `agent/fs/file_system.ts`): what stores and
 *   trackers write through, small enough that a power-cut file system stands in for it.
 *
 * Contract tests, one per kind, run every implementation through the same cases:
 * `fixtures/codec_contract.ts`, `fixtures/backend_contract.ts`,
 * `fixtures/transport_contract.ts`.
 *
 * @module
 */

export type { Cut, Tracker } from "../tracker.ts";
export type {
  ByteChannel,
  Transport,
  TransportAddress,
  TransportListener,
} from "../wire/transport.ts";
export type { Algorithm, Codec } from "../codec/codec.ts";
export type {
  BeginOptions,
  CommittedState,
  Destination,
  ResumeInfo,
  StagedBlock,
  StageResult,
} from "../sync/destination.ts";
export type {
  DataExtents,
  GenerationSnapshots,
  HolePunch,
  NoSpaceReservation,
  ReplicaBackend,
  ReplicaImage,
  SpaceClaim,
  SpaceUsage,
  StagingBackend,
  StagingRecord,
  VolumeBackend,
} from "../store/replica_backend.ts";
export type { VmControl, VmStatus } from "../qemu/vm_control.ts";
export { runEvacuateHook } from "../daemon/evacuate_hook.ts";
export type { FileHandle, FileLock, FileSystem, OpenOptions } from "../fs/file_system.ts";
export type {
  CodecPlugin,
  StorePlugin,
  TrackerOpenContext,
  TrackerPlugin,
  TrackerSettings,
  TransportPlugin,
  TransportSettings,
} from "../registry/mod.ts";
