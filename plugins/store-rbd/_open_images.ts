/**
 * The images a back end has open, shared by name and mode and counted: the last user's
 * release closes the handle, and whoever opens or removes that image next waits for the close
 * to finish, so no handle outlives its users (another client's `rbd_remove` would find it
 * watching the image and fail with EBUSY).
 *
 * @module
 */

import type { RbdImage } from "./rbd_image.ts";
import type { OpenImageOptions, RbdPool } from "./rbd_pool.ts";

interface Entry {
  image: Promise<RbdImage>;
  users: number;
}

/** Shared, counted image handles of one pool. */
export class OpenImages {
  readonly #entries = new Map<string, Entry>();
  readonly #closing = new Map<string, Promise<void>>();

  /** Opens `name` (a shared handle while others use it) and returns it with its release. */
  async acquire(
    pool: RbdPool,
    name: string,
    options: OpenImageOptions = {},
  ): Promise<{ image: RbdImage; release: () => void }> {
    const key = `${name}@${options.snapshot ?? ""}${options.readOnly ? ":ro" : ""}`;
    await this.#closing.get(key);
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = { image: pool.openImage(name, options), users: 0 };
      this.#entries.set(key, entry);
      entry.image.catch(() => this.#entries.delete(key));
    }
    entry.users++;
    let image: RbdImage;
    try {
      image = await entry.image;
    } catch (err) {
      entry.users--;
      throw err;
    }
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (--entry.users > 0) return;
      this.#entries.delete(key);
      const closing = image.close().catch(() => {}).finally(() => this.#closing.delete(key));
      this.#closing.set(key, closing);
    };
    return { image, release };
  }

  /** Waits until every handle released so far is closed. */
  async settled(): Promise<void> {
    await Promise.all(this.#closing.values());
  }
}
