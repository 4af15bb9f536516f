/**
 * A `FileHandle` over an RBD image, so that the replica's manifest (32 bytes per block) is a
 * small image of its own beside the data image: positioned I/O, durable after `sync`.
 *
 * @module
 */

import type { FileHandle } from "../../agent/fs/file_system.ts";
import type { RbdImage } from "./rbd_image.ts";

/** An RBD image seen as a fixed-size file; `release` runs once on close. */
export class RbdFile implements FileHandle {
  readonly #image: RbdImage;
  readonly #release: () => void;
  #closed = false;

  constructor(image: RbdImage, release: () => void) {
    this.#image = image;
    this.#release = release;
  }

  async read(offset: number, into: Uint8Array): Promise<number> {
    return await this.#image.readInto(offset, into);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#image.write(offset, data);
  }

  async size(): Promise<number> {
    return (await this.#image.stat()).sizeBytes;
  }

  truncate(size: number): Promise<void> {
    return this.#image.resize(size);
  }

  sync(): Promise<void> {
    return this.#image.flush();
  }

  allocate(): Promise<boolean> {
    return Promise.resolve(false);
  }

  punchHole(): Promise<boolean> {
    return Promise.resolve(false);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release();
  }
}
