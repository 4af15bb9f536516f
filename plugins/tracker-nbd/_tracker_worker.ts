/**
 * Worker side of {@linkcode WorkerNbdTracker}: runs an {@linkcode NbdTracker} (its NBD server,
 * live bitmap, copy-before-write) on a thread of its own, so the VM's I/O never waits for
 * the sender's hashing and compression on the main thread. Answers the main thread's
 * requests (`cut`, `resume`, `read`, `release`, `close`) by id. The thread runs at the VM's
 * priority ({@linkcode VM_IO_NICE}) where the agent is allowed to set it, even when the
 * agent process runs niced so that its sending yields to the VMs.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { Bitmap } from "../../agent/core/mod.ts";
import { setThreadNice, VM_IO_NICE } from "../../agent/daemon/thread_priority.ts";
import { PresyncError } from "../../agent/errors.ts";
import type { Cut } from "../../agent/tracker.ts";
import { DirtyMirror } from "./dirty_mirror.ts";
import { NbdCut } from "./nbd_cut.ts";
import { NbdTracker } from "./nbd_tracker.ts";
import { owned, type WorkerReply, type WorkerRequest } from "./_worker_protocol.ts";

let tracker: NbdTracker | null = null;
const cuts = new Map<number, Cut>();
let nextCut = 1;

function reply(message: WorkerReply, transfer: Transferable[] = []): void {
  self.postMessage(message, transfer);
}

async function handle(request: WorkerRequest): Promise<void> {
  const { id } = request;
  try {
    switch (request.op) {
      case "init": {
        // Not permitted (no LimitNICE= headroom): the thread keeps the process's value.
        setThreadNice(VM_IO_NICE);
        const { initialDirty, mirror, ...options } = request.options;
        const blocks = Math.ceil(options.identity.sizeBytes / options.identity.blockSize);
        using initial = initialDirty ? Bitmap.deserialize(initialDirty, blocks) : null;
        tracker = await NbdTracker.create({
          ...options,
          initialDirty: initial ?? undefined,
          onError: (err) => reply({ id: 0, op: "connectionError", error: String(err) }),
          mirror: new DirtyMirror(blocks, mirror),
        });
        reply({ id, op: "ok", addresses: tracker.addresses });
        return;
      }
      case "cut":
      case "resume": {
        let cut: Cut;
        if (request.op === "cut") cut = await tracker!.cut();
        else {
          const blocks = Math.ceil(tracker!.sizeBytes / tracker!.blockSize);
          using dirty = Bitmap.deserialize(request.dirty, blocks);
          cut = await tracker!.resume(dirty);
        }
        const cutId = nextCut++;
        cuts.set(cutId, cut);
        const dirty = owned(cut.dirty.serialize());
        const pages = cut instanceof NbdCut ? cut.pagePairs() : new Uint32Array(0);
        const pagesKnown = cut instanceof NbdCut && cut.knowsPages;
        reply({ id, op: "cut", cutId, dirty, pointInTime: cut.pointInTime, pages, pagesKnown }, [
          dirty.buffer,
          pages.buffer,
        ]);
        return;
      }
      case "read": {
        const data = owned(await cuts.get(request.cutId)!.read(request.first, request.count));
        reply({ id, op: "data", data }, [data.buffer]);
        return;
      }
      case "release": {
        await cuts.get(request.cutId)?.release();
        cuts.delete(request.cutId);
        reply({ id, op: "ok" });
        return;
      }
      case "close": {
        for (const cut of cuts.values()) await cut.release();
        cuts.clear();
        await tracker?.close();
        reply({ id, op: "ok" });
        return;
      }
    }
  } catch (err) {
    reply({
      id,
      op: "error",
      code: err instanceof PresyncError ? err.code : undefined,
      message: err instanceof Error ? err.message : String(err),
      retryable: err instanceof PresyncError && err.retryable,
    });
  }
}

self.onmessage = (event: MessageEvent<WorkerRequest>) => {
  handle(event.data);
};
