import { Bitmap } from "../../agent/core/mod.ts";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { NbdAddress } from "../../agent/nbd/mod.ts";
import type { Cut, TrackedChanges, Tracker } from "../../agent/tracker.ts";
import { PageMasks, pageMasksSupported } from "../../agent/volume/page_masks.ts";
import { blockCount } from "../../agent/volume/volume_identity.ts";
import { DirtyMirror } from "./dirty_mirror.ts";
import type { NbdTrackerOptions } from "./nbd_tracker.ts";
import { owned, type WorkerCall, type WorkerReply } from "./_worker_protocol.ts";

type Pending = { resolve: (reply: WorkerReply) => void; reject: (err: unknown) => void };

/**
 * The NBD tracker on a thread of its own (`_tracker_worker.ts`): the VM's NBD server, the live
 * bitmap and copy-before-write run in a Worker, so a VM write is answered while the main
 * thread hashes, compresses and sends. Same contract as {@linkcode NbdTracker}; cuts and
 * block reads cross as messages (bitmaps serialized, data transferred, not copied).
 */
export class WorkerNbdTracker implements Tracker {
  readonly sizeBytes: number;
  readonly blockSize: number;
  /** Where the server listens (the bound addresses). */
  addresses: NbdAddress[] = [];
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  /** The live set, kept by the worker (see `WorkerTrackerOptions`). */
  readonly #mirror: DirtyMirror;
  #nextId = 1;
  #closed = false;
  /** Set when the worker died: every later call fails with it. */
  #failure: PresyncError | null = null;

  private constructor(options: NbdTrackerOptions) {
    this.sizeBytes = options.identity.sizeBytes;
    this.blockSize = options.identity.blockSize;
    this.#mirror = new DirtyMirror(blockCount(this));
    this.#worker = new Worker(new URL("./_tracker_worker.ts", import.meta.url).href, {
      type: "module",
    });
    this.#worker.onmessage = (event: MessageEvent<WorkerReply>) => {
      const reply = event.data;
      if (reply.op === "connectionError") {
        options.onError?.(new Error(reply.error));
        return;
      }
      const pending = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if (!pending) return;
      if (reply.op === "error") {
        pending.reject(
          new PresyncError(reply.code ?? ErrorCode.IO, reply.message, {
            retryable: reply.retryable,
          }),
        );
      } else pending.resolve(reply);
    };
    this.#worker.onerror = (event) => {
      event.preventDefault();
      this.#fail(new PresyncError(ErrorCode.IO, `NBD tracker worker failed: ${event.message}`));
    };
  }

  /** Starts the worker and the tracker in it (see {@linkcode NbdTrackerOptions}). */
  static async create(options: NbdTrackerOptions): Promise<WorkerNbdTracker> {
    const tracker = new WorkerNbdTracker(options);
    try {
      const { onError: _onError, mirror: _mirror, initialDirty, ...rest } = options;
      const reply = await tracker.#call({
        op: "init",
        options: {
          ...rest,
          initialDirty: initialDirty?.serialize(),
          mirror: tracker.#mirror.buffer,
        },
      });
      tracker.addresses = (reply as { addresses: NbdAddress[] }).addresses;
      return tracker;
    } catch (err) {
      tracker.#worker.terminate();
      throw err;
    }
  }

  #call(request: WorkerCall, transfer: Transferable[] = []): Promise<WorkerReply> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) {
      return Promise.reject(
        new PresyncError(ErrorCode.INVALID_ARGUMENT, "the NBD tracker is closed"),
      );
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ ...request, id }, transfer);
    });
  }

  #fail(error: PresyncError): void {
    this.#failure = error;
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
  }

  /** The worker's live set, read from shared memory: every write so far since the last cut. */
  changesNow(): TrackedChanges {
    const pages = this.#mirror.pages();
    return {
      ...(pages >= 0 ? { pages } : {}),
      blocks: this.#mirror.toBitmap(),
      asOfMs: Date.now(),
      exact: true,
      newBlocksPerSecond: 0,
      rewritesPerSecond: 0,
      lastCutOutside: 0,
    };
  }

  async cut(): Promise<Cut> {
    return this.#cutFrom(await this.#call({ op: "cut" }));
  }

  async resume(dirty: Bitmap): Promise<Cut> {
    const bytes = owned(dirty.serialize());
    return this.#cutFrom(await this.#call({ op: "resume", dirty: bytes }, [bytes.buffer]));
  }

  #cutFrom(reply: WorkerReply): Cut {
    const { cutId, dirty, pointInTime, pages, pagesKnown } = reply as Extract<
      WorkerReply,
      { op: "cut" }
    >;
    const bitmap = Bitmap.deserialize(dirty, blockCount(this));
    // Known pages and no pair: every block of the cut is whole (or none was written).
    const masks = pagesKnown && pageMasksSupported(this.blockSize)
      ? PageMasks.fromPairs(this.blockSize, pages)
      : null;
    let released: Promise<void> | null = null;
    return {
      dirty: bitmap,
      pointInTime,
      // Without masks (a resumed cut) the cut says nothing about pages, like the scan tracker.
      ...(masks ? { pageMask: (block: number) => masks.get(block) } : {}),
      read: async (first, count) => {
        const data = await this.#call({ op: "read", cutId, first, count });
        return (data as Extract<WorkerReply, { op: "data" }>).data;
      },
      release: () => {
        released ??= (async () => {
          bitmap.free();
          if (!this.#closed) await this.#call({ op: "release", cutId });
        })();
        return released;
      },
    };
  }

  /** Stops serving, saves the live set (see `NbdTracker.close`) and ends the worker. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#call({ op: "close" });
    } finally {
      this.#closed = true;
      this.#worker.terminate();
    }
  }
}
