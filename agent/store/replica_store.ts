import { mkdirDurable } from "../fs/atomic_write.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { validateVolumeName, type VolumeIdentity } from "../volume/volume_identity.ts";
import { ReplicaVolume } from "./replica_volume.ts";

/**
 * A destination store: a directory with one subdirectory per volume, named after the
 * volume (names are validated, so no name can reach outside the store).
 */
export class ReplicaStore {
  readonly root: string;
  readonly #fs: FileSystem;

  constructor(fs: FileSystem, root: string) {
    this.#fs = fs;
    this.root = root;
  }

  /** The directory of volume `name`. Throws `INVALID_VOLUME_NAME` for a bad name. */
  volumeDir(name: string): string {
    return `${this.root}/${validateVolumeName(name)}`;
  }

  /** Whether volume `name` exists. */
  has(name: string): Promise<boolean> {
    return this.#fs.exists(`${this.volumeDir(name)}/meta.json`);
  }

  /** Creates a new, all-zero replica. */
  async init(identity: VolumeIdentity): Promise<ReplicaVolume> {
    await io(`create store ${this.root}`, () => mkdirDurable(this.#fs, this.root));
    return ReplicaVolume.init(this.#fs, this.volumeDir(identity.name), identity);
  }

  /** Opens an existing replica, running crash recovery. */
  open(name: string): Promise<ReplicaVolume> {
    return ReplicaVolume.open(this.#fs, this.volumeDir(name));
  }

  /** Names of the volumes in the store. */
  async list(): Promise<string[]> {
    if (!(await this.#fs.exists(this.root))) return [];
    const names: string[] = [];
    for (const name of await this.#fs.readDir(this.root)) {
      if (await this.#fs.exists(`${this.root}/${name}/meta.json`)) names.push(name);
    }
    return names.sort();
  }
}
