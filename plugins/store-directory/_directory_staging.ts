import { atomicWrite, mkdirDurable, readWhole } from "../../agent/fs/atomic_write.ts";
import type { FileHandle, FileSystem } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import type { StagingBackend, StagingRecord } from "../../agent/store/replica_backend.ts";

/** File name of each staging record (docs/STORE.md). */
const RECORD_FILES: Record<StagingRecord, string> = {
  header: "header.json",
  dirty: "dirty",
  received: "received",
  fold: "fold",
  "received.folded": "received.folded",
  commit: "COMMIT",
  rollback: "ROLLBACK",
};

/**
 * The staging area of a directory volume: `<volume>/staging/`, removed by renaming it to
 * `<volume>/staging.dead` first, so a crash never leaves half of one behind a header.
 */
export class DirectoryStaging implements StagingBackend {
  readonly location: string;
  readonly #fs: FileSystem;
  readonly #volumeDir: string;
  readonly #dead: string;

  constructor(fs: FileSystem, volumeDir: string) {
    this.#fs = fs;
    this.#volumeDir = volumeDir;
    this.location = `${volumeDir}/staging`;
    this.#dead = `${volumeDir}/staging.dead`;
  }

  async exists(): Promise<boolean> {
    return await this.#fs.exists(this.location) || await this.#fs.exists(this.#dead);
  }

  create(): Promise<void> {
    return io(`create ${this.location}`, () => mkdirDurable(this.#fs, this.location));
  }

  read(name: StagingRecord): Promise<Uint8Array | null> {
    const path = `${this.location}/${RECORD_FILES[name]}`;
    return io(`read ${path}`, () => readWhole(this.#fs, path));
  }

  write(name: StagingRecord, bytes: Uint8Array): Promise<void> {
    const path = `${this.location}/${RECORD_FILES[name]}`;
    return io(`write ${path}`, () => atomicWrite(this.#fs, path, bytes));
  }

  openLog(): Promise<FileHandle> {
    const path = `${this.location}/log`;
    return io(`open ${path}`, () => this.#fs.open(path, { create: true }));
  }

  openHashes(): Promise<FileHandle> {
    const path = `${this.location}/hashes`;
    return io(`open ${path}`, () => this.#fs.open(path, { create: true }));
  }

  async discard(): Promise<void> {
    const fs = this.#fs;
    if (await fs.exists(this.location)) {
      await io(`remove ${this.location}`, async () => {
        await fs.remove(this.#dead);
        await fs.rename(this.location, this.#dead);
        await fs.syncDir(this.#volumeDir);
      });
    }
    await io(`remove ${this.#dead}`, () => fs.remove(this.#dead));
    await io(`sync ${this.#volumeDir}`, () => fs.syncDir(this.#volumeDir));
  }
}
