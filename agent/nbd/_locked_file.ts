import { ErrorCode, PresyncError } from "../errors.ts";
import { io } from "../fs/io_error.ts";

/**
 * Positional reads and writes on one open file. Deno files have one cursor, so seek + read
 * must not interleave: calls are queued and run one at a time.
 */
export class LockedFile {
  readonly path: string;
  readonly #file: Deno.FsFile;
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Opens `path` (read-write unless `readOnly`; created when `create`). */
  static async open(
    path: string,
    options: { readOnly?: boolean; create?: boolean } = {},
  ): Promise<LockedFile> {
    const write = !options.readOnly;
    const file = await io(
      `open ${path}`,
      () => Deno.open(path, { read: true, write, create: write && options.create === true }),
    );
    return new LockedFile(path, file);
  }

  #run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(() => {
      if (this.#closed) {
        throw new PresyncError(ErrorCode.IO, `${what} ${this.path}: the file is closed`);
      }
      return io(`${what} ${this.path}`, fn);
    });
    this.#tail = next.catch(() => {});
    return next;
  }

  /** Reads `into.length` bytes at `offset`; bytes past the end of the file read as zeros. */
  read(offset: number, into: Uint8Array): Promise<Uint8Array> {
    return this.#run("read", async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      let at = 0;
      while (at < into.length) {
        const n = await this.#file.read(into.subarray(at));
        if (n === null) break;
        at += n;
      }
      into.fill(0, at);
      return into;
    });
  }

  /** Writes all of `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#run("write", async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      for (let at = 0; at < data.length;) at += await this.#file.write(data.subarray(at));
    });
  }

  /** File size in bytes. */
  size(): Promise<number> {
    return this.#run("stat", async () => (await this.#file.stat()).size);
  }

  /** Sets the file size. */
  truncate(size: number): Promise<void> {
    return this.#run("truncate", () => this.#file.truncate(size));
  }

  /** fsync. */
  sync(): Promise<void> {
    return this.#run("sync", () => this.#file.sync());
  }

  /** Closes after queued calls finish. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#tail;
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }
}
