import type { Bitmap } from "../../agent/core/mod.ts";
import type { NbdClient } from "../../agent/nbd/mod.ts";
import type { Cut } from "../../agent/tracker.ts";
import type { VolumeIdentity } from "../../agent/volume/volume_identity.ts";

/**
 * A generation of the QEMU tracker: its dirty set, read from QEMU's frozen bitmap, and
 * reads through QEMU's NBD server: from the fleecing overlay (the disk as of the cut,
 * `pointInTime`), or from the live disk for a generation resumed after a restart.
 * `release()` ends the export and runs the tracker's clean-up (overlay, frozen bitmap).
 */
export class QemuCut implements Cut {
  readonly dirty: Bitmap;
  readonly pointInTime: boolean;
  readonly #client: NbdClient;
  readonly #identity: VolumeIdentity;
  readonly #cleanUp: () => Promise<void>;
  #released: Promise<void> | null = null;

  constructor(
    dirty: Bitmap,
    pointInTime: boolean,
    client: NbdClient,
    identity: VolumeIdentity,
    cleanUp: () => Promise<void>,
  ) {
    this.dirty = dirty;
    this.pointInTime = pointInTime;
    this.#client = client;
    this.#identity = identity;
    this.#cleanUp = cleanUp;
  }

  async read(first: number, count: number): Promise<Uint8Array> {
    const { blockSize, sizeBytes } = this.#identity;
    const offset = first * blockSize;
    const length = Math.min(count * blockSize, sizeBytes - offset);
    return await this.#client.readSpan(offset, length);
  }

  /** Whether `release()` was called. */
  get released(): boolean {
    return this.#released !== null;
  }

  release(): Promise<void> {
    this.#released ??= (async () => {
      try {
        await this.#client.close();
        await this.#cleanUp();
      } finally {
        this.dirty.free();
      }
    })();
    return this.#released;
  }
}
