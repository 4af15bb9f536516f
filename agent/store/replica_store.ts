import { ErrorCode, PresyncError } from "../errors.ts";
import { io } from "../fs/io_error.ts";
import type { VolumeIdentity } from "../volume/volume_identity.ts";
import {
  hasSpaceUsage,
  keepsGenerations,
  type KeptGeneration,
  type ReplicaBackend,
} from "./replica_backend.ts";
import { readReplicaMeta, type ReplicaMeta } from "./replica_meta.ts";
import { ReplicaVolume } from "./replica_volume.ts";
import { rollbackVolume } from "./replica_rollback.ts";
import { StagingArea } from "./staging_area.ts";

/** What {@linkcode ReplicaStore.describe} tells about a volume, read without side effects. */
export interface VolumeSummary {
  name: string;
  /** The committed state (as recorded: a commit logged but not yet replayed is not in it). */
  meta: ReplicaMeta;
  /** Seeding its first generation in place (see `ReplicaVolume.initialising`). */
  initialising: boolean;
  /** The generation being staged, if any. */
  stagingGeneration: number | null;
  /** Bytes of storage the volume occupies; null when the back end cannot tell. */
  allocatedBytes: number | null;
  /** Committed generations the back end keeps, oldest first; null when it keeps none. */
  generations: KeptGeneration[] | null;
}

/**
 * A destination store: the replicas of many volumes over one back end (a directory, later
 * Ceph RBD). Names are validated by the back end, so no name can reach outside the store.
 */
export class ReplicaStore {
  readonly backend: ReplicaBackend;

  constructor(backend: ReplicaBackend) {
    this.backend = backend;
  }

  /** Where the store is, for messages. */
  get location(): string {
    return this.backend.location;
  }

  /** Whether volume `name` exists. Throws `INVALID_VOLUME_NAME` for a bad name. */
  async has(name: string): Promise<boolean> {
    const volume = this.backend.volume(name);
    return (await io(`read ${volume.location} metadata`, () => volume.readMeta())) !== null;
  }

  /** Creates a new, all-zero replica. Throws `VOLUME_EXISTS` when there is one already. */
  async init(identity: VolumeIdentity): Promise<ReplicaVolume> {
    const volume = this.backend.volume(identity.name);
    await io(`create ${volume.location}`, () => this.backend.create(identity));
    return ReplicaVolume.init(volume, identity);
  }

  /** Opens an existing replica, running crash recovery. */
  open(name: string): Promise<ReplicaVolume> {
    return ReplicaVolume.open(this.backend.volume(name));
  }

  /** The committed state of `name`, read without recovery or any other side effect. */
  readMeta(name: string): Promise<ReplicaMeta> {
    return readReplicaMeta(this.backend.volume(name));
  }

  /** What `presync volumes` shows about `name`, read without side effects. */
  async describe(name: string): Promise<VolumeSummary> {
    const volume = this.backend.volume(name);
    const meta = await readReplicaMeta(volume);
    const header = await StagingArea.readHeader(volume.staging);
    const backend = this.backend;
    const allocatedBytes = hasSpaceUsage(backend)
      ? await io(`measure ${volume.location}`, () => backend.allocatedBytes(name))
      : null;
    const generations = keepsGenerations(volume)
      ? await io(`list the generations of ${volume.location}`, () => volume.generations())
      : null;
    return {
      name,
      meta,
      generations,
      initialising: header?.inPlace === true,
      stagingGeneration: header?.generation ?? null,
      allocatedBytes,
    };
  }

  /** {@linkcode describe} of every volume; one deleted meanwhile is left out. */
  async summaries(): Promise<VolumeSummary[]> {
    const summaries: VolumeSummary[] = [];
    for (const name of await this.list()) {
      try {
        summaries.push(await this.describe(name));
      } catch (err) {
        if (!(err instanceof PresyncError && err.code === ErrorCode.VOLUME_NOT_FOUND)) throw err;
      }
    }
    return summaries;
  }

  /** Names of the volumes in the store. */
  list(): Promise<string[]> {
    return io(`list ${this.location}`, () => this.backend.list());
  }

  /**
   * Rolls volume `name` back to committed generation `generation`, kept by the back end
   * (RBD snapshots): the replica is then exactly that generation, and the later ones are
   * gone. Refused with `STORE_BUSY` while the volume is open anywhere (a connected source, an
   * export).
   */
  async rollback(name: string, generation: number): Promise<void> {
    const volume = this.backend.volume(name);
    const lock = await io(`lock ${volume.location}`, () => volume.lock("exclusive"));
    if (!lock) {
      throw new PresyncError(
        ErrorCode.STORE_BUSY,
        `volume ${name} is in use (a source is connected, it is exported, or a local sync ` +
          `or verify runs on it); stop that first (stop its agent), then roll it back`,
        { retryable: true },
      );
    }
    try {
      await rollbackVolume(volume, generation);
    } finally {
      lock.release();
    }
  }

  /**
   * Deletes volume `name` and everything it holds (a new sync of that name then starts a
   * full one). Refused with `STORE_BUSY` while the volume is open anywhere (a connected
   * source, an export, a local sync, also in other processes).
   */
  async remove(name: string): Promise<void> {
    const volume = this.backend.volume(name);
    if ((await io(`read ${volume.location} metadata`, () => volume.readMeta())) === null) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `no replica of volume ${name} in ${this.location}`,
      );
    }
    const lock = await io(`lock ${volume.location}`, () => volume.lock("exclusive"));
    if (!lock) {
      throw new PresyncError(
        ErrorCode.STORE_BUSY,
        `volume ${name} is in use (a source is connected, it is exported, or a local sync ` +
          `or verify runs on it); stop that first, then delete it`,
        { retryable: true },
      );
    }
    try {
      await io(`delete ${volume.location}`, () => this.backend.remove(name));
    } finally {
      lock.release();
    }
  }
}
