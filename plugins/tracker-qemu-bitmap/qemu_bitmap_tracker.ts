import { Bitmap } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import {
  NBD_STATE_DIRTY,
  type NbdAddress,
  NbdClient,
  type StatusExtent,
} from "../../agent/nbd/mod.ts";
import type { Cut, Tracker } from "../../agent/tracker.ts";
import { blockCount, reseedHint, type VolumeIdentity } from "../../agent/volume/volume_identity.ts";

/** Options of {@linkcode QemuBitmapTracker}. */
export interface QemuBitmapTrackerOptions {
  /** The NBD server exporting the disk with its bitmap (e.g. `qemu-nbd --bitmap NAME`). */
  address: NbdAddress;
  /** The export name (`qemu-nbd -x NAME`; empty for the default export). */
  exportName: string;
  /** The dirty bitmap's name: read through the `qemu:dirty-bitmap:NAME` context. */
  bitmap: string;
  identity: VolumeIdentity;
  /**
   * True when the operator guarantees the export is a frozen view of the disk (VM stopped,
   * or a fleecing/snapshot export): the cut is then point-in-time. Default false.
   */
  frozen?: boolean;
  /**
   * True for a volume that has no generation yet: the first `cut()` then marks every block,
   * since the replica starts empty and the bitmap knows only writes made since it was added.
   * Default false.
   */
  fullFirstCut?: boolean;
}

/**
 * Marks in `dirty` every block (of `blockSize` bytes) touched by a dirty extent, for
 * extents reported consecutively from byte `offset`. Returns the byte after the last
 * extent. Pure: the unit of QEMU's bitmap (its granularity) need not match ours.
 */
export function markDirtyExtents(
  dirty: Bitmap,
  offset: number,
  extents: StatusExtent[],
  blockSize: number,
  sizeBytes: number,
): number {
  let at = offset;
  for (const { lengthBytes, flags } of extents) {
    const end = Math.min(at + lengthBytes, sizeBytes);
    if ((flags & NBD_STATE_DIRTY) !== 0 && end > at) {
      const first = Math.floor(at / blockSize);
      const last = Math.floor((end - 1) / blockSize);
      dirty.setRange(first, last - first + 1);
    }
    at += lengthBytes;
  }
  return at;
}

/**
 * The tracker that reads QEMU's own persistent dirty bitmap over NBD: `cut()` queries
 * `qemu:dirty-bitmap:NAME` with BLOCK_STATUS over the whole export and reads the dirty
 * blocks' data from the same export. It never clears the bitmap: rotating bitmaps between
 * generations is the operator's job (see this plugin's `mod.ts`).
 */
export class QemuBitmapTracker implements Tracker {
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly #options: QemuBitmapTrackerOptions;
  #full: boolean;

  constructor(options: QemuBitmapTrackerOptions) {
    this.#options = options;
    this.#full = options.fullFirstCut === true;
    this.sizeBytes = options.identity.sizeBytes;
    this.blockSize = options.identity.blockSize;
  }

  /** The metadata context name for the bitmap. */
  get context(): string {
    return `qemu:dirty-bitmap:${this.#options.bitmap}`;
  }

  async #connect(contexts: string[]): Promise<NbdClient> {
    const { address, exportName, identity } = this.#options;
    const client = await NbdClient.connect(address, exportName, { metaContexts: contexts });
    if (client.sizeBytes !== identity.sizeBytes) {
      await client.close();
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `NBD export "${exportName}" is ${client.sizeBytes} bytes but volume ` +
          `\`${identity.name}\` is ${identity.sizeBytes}; ${reseedHint(identity.name)}`,
      );
    }
    return client;
  }

  /** Unknown without reading QEMU's bitmap over NBD: status estimates the writes from the write rate. */
  changesNow(): null {
    return null;
  }

  async cut(): Promise<Cut> {
    const client = await this.#connect([this.context]);
    const dirty = new Bitmap(blockCount(this.#options.identity));
    try {
      if (!client.contexts.has(this.context)) {
        throw new PresyncError(
          ErrorCode.NBD_REQUEST_FAILED,
          `the NBD export does not offer ${this.context}: export it with ` +
            `qemu-nbd --bitmap ${this.#options.bitmap} (the bitmap must exist and be persistent)`,
        );
      }
      for (let at = 0; at < this.sizeBytes;) {
        const length = Math.min(this.sizeBytes - at, 2 ** 31);
        const extents = await client.blockStatus(at, length, this.context);
        at = markDirtyExtents(dirty, at, extents, this.blockSize, this.sizeBytes);
      }
      if (this.#full) dirty.setRange(0, dirty.size);
      this.#full = false;
      return new QemuBitmapCut(client, dirty, this.#options);
    } catch (err) {
      dirty.free();
      await client.close();
      throw err;
    }
  }

  async resume(dirty: Bitmap): Promise<Cut> {
    return new QemuBitmapCut(await this.#connect([]), dirty.clone(), this.#options);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

class QemuBitmapCut implements Cut {
  readonly dirty: Bitmap;
  readonly pointInTime: boolean;
  readonly #client: NbdClient;
  readonly #identity: VolumeIdentity;
  #released = false;

  constructor(client: NbdClient, dirty: Bitmap, options: QemuBitmapTrackerOptions) {
    this.#client = client;
    this.dirty = dirty;
    this.pointInTime = options.frozen === true;
    this.#identity = options.identity;
  }

  async read(first: number, count: number): Promise<Uint8Array> {
    const { blockSize, sizeBytes } = this.#identity;
    const offset = first * blockSize;
    const length = Math.min(count * blockSize, sizeBytes - offset);
    return await this.#client.readSpan(offset, length);
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await this.#client.close();
    this.dirty.free();
  }
}
