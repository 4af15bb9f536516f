import type { FileHandle } from "../../agent/fs/file_system.ts";
import { io } from "../../agent/fs/io_error.ts";
import type { HolePunch, ReplicaImage, SpaceClaim } from "../../agent/store/replica_backend.ts";

/**
 * Writes kept in flight on an image file. Writes of a block or less run synchronously in
 * the file layer, larger ones in the thread pool, where a few overlap usefully.
 */
const WRITE_WINDOW = 4;

/** A replica image that is a sparse file: claims with `fallocate`, zeros as holes. */
export class DirectoryImage implements ReplicaImage, SpaceClaim, HolePunch {
  readonly sizeBytes: number;
  readonly writeWindow = WRITE_WINDOW;
  readonly #file: FileHandle;
  readonly #path: string;

  constructor(file: FileHandle, path: string, sizeBytes: number) {
    this.#file = file;
    this.#path = path;
    this.sizeBytes = sizeBytes;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    const n = await io(`read ${this.#path}`, () => this.#file.read(offset, into));
    into.fill(0, n);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return io(`write ${this.#path}`, () => this.#file.write(offset, data));
  }

  flush(): Promise<void> {
    return io(`sync ${this.#path}`, () => this.#file.sync());
  }

  claim(offset: number, length: number): Promise<boolean> {
    return io(`allocate in ${this.#path}`, () => this.#file.allocate(offset, length));
  }

  punchHole(offset: number, length: number): Promise<boolean> {
    return io(`punch a hole in ${this.#path}`, () => this.#file.punchHole(offset, length));
  }

  close(): void {
    this.#file.close();
  }
}
