import type { ErrorCode } from "../../agent/errors.ts";
import type { NbdAddress } from "../../agent/nbd/mod.ts";
import type { NbdTrackerOptions } from "./nbd_tracker.ts";

/** Tracker options as they cross to the worker (bitmaps serialized, no callbacks). */
export type WorkerTrackerOptions =
  & Omit<NbdTrackerOptions, "initialDirty" | "onError" | "mirror">
  & {
    initialDirty?: Uint8Array;
    /**
     * The memory of a `DirtyMirror` (`dirty_mirror.ts`) the worker keeps equal to its live set, so the
     * main thread reads the set without a message round trip.
     */
    mirror: SharedArrayBuffer;
  };

/** What the main thread asks of the worker. */
export type WorkerCall =
  | { op: "init"; options: WorkerTrackerOptions }
  | { op: "cut" }
  | { op: "resume"; dirty: Uint8Array }
  | { op: "read"; cutId: number; first: number; count: number }
  | { op: "release"; cutId: number }
  | { op: "close" };

/** Main thread → worker: a call and the id its reply carries. */
export type WorkerRequest = WorkerCall & { id: number };

/** Worker → main thread (`id` 0: not an answer, an event). */
export type WorkerReply =
  | { id: number; op: "ok"; addresses?: NbdAddress[] }
  | {
    id: number;
    op: "cut";
    cutId: number;
    dirty: Uint8Array;
    pointInTime: boolean;
    /** The cut's page masks as `[block, mask]` pairs (`PageMasks.toPairs`). */
    pages: Uint32Array;
    /**
     * Whether the cut knows its pages (no pairs then means every block is whole); false for
     * a resumed cut or a block size without masks.
     */
    pagesKnown: boolean;
  }
  | { id: number; op: "data"; data: Uint8Array }
  | { id: number; op: "error"; code?: ErrorCode; message: string; retryable: boolean }
  | { id: 0; op: "connectionError"; error: string };

/**
 * `bytes` as an array owning its whole buffer, so the buffer can be transferred (moved, not
 * copied) to the other thread: a view into a larger buffer (e.g. WASM memory) is copied.
 */
export function owned(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength &&
    bytes.buffer instanceof ArrayBuffer;
  return (whole ? bytes : bytes.slice()) as Uint8Array<ArrayBuffer>;
}
