import type { FileHandle, FileSystem, OpenOptions } from "./file_system.ts";

/**
 * A file handle whose positioned reads and writes may be called concurrently: Deno has no
 * pread/pwrite, so each is a seek then a read or write, and they run one at a time (two
 * interleaved seeks would read or write at the wrong offset).
 */
class DenoFileHandle implements FileHandle {
  #file: Deno.FsFile;
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn);
    this.#queue = next.catch(() => {});
    return next;
  }

  read(offset: number, into: Uint8Array): Promise<number> {
    return this.#serial(async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      let total = 0;
      while (total < into.length) {
        const n = await this.#file.read(into.subarray(total));
        if (n === null) break;
        total += n;
      }
      return total;
    });
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      let written = 0;
      while (written < data.length) written += await this.#file.write(data.subarray(written));
    });
  }

  async size(): Promise<number> {
    return (await this.#file.stat()).size;
  }

  truncate(size: number): Promise<void> {
    return this.#file.truncate(size);
  }

  sync(): Promise<void> {
    return this.#file.sync();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }
}

/** The real file system, through Deno's file APIs. */
export class DenoFileSystem implements FileSystem {
  async open(path: string, options: OpenOptions = {}): Promise<FileHandle> {
    const write = options.write === true || options.create === true;
    return new DenoFileHandle(
      await Deno.open(path, { read: true, write, create: options.create === true }),
    );
  }

  rename(from: string, to: string): Promise<void> {
    return Deno.rename(from, to);
  }

  async remove(path: string): Promise<void> {
    try {
      await Deno.remove(path, { recursive: true });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }

  mkdir(path: string): Promise<void> {
    return Deno.mkdir(path, { recursive: true });
  }

  async syncDir(path: string): Promise<void> {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await Deno.stat(path);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    }
  }

  async readDir(path: string): Promise<string[]> {
    const names: string[] = [];
    for await (const entry of Deno.readDir(path)) names.push(entry.name);
    return names;
  }
}
