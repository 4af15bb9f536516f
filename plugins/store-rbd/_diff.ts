/**
 * `rbd_diff_iterate2` as a list of extents. The call runs on a worker thread; librbd calls the
 * extent callback from that thread (fast-diff on) or from its own (fast-diff off), so the
 * callback is thread-safe: each call waits until the event loop has recorded the extent.
 *
 * @module
 */

import type { ImageHandle } from "./_image_handle.ts";
import { ceph, cString, held } from "./_librbd.ts";
import { checkBytes, checkName } from "./_names.ts";
import { check } from "./rbd_error.ts";

/** One extent of {@linkcode RbdImage.diff}. */
export interface DiffExtent {
  offsetBytes: number;
  lengthBytes: number;
  /** False when the extent was discarded or zeroed (it reads as zeros), true when written. */
  exists: boolean;
}

/** Options of {@linkcode RbdImage.diff}. */
export interface DiffOptions {
  /** Report changes since this snapshot; without it, every extent that holds data. */
  fromSnapshot?: string;
  /** Start of the range to report. Default 0. */
  offsetBytes?: number;
  /** Length of the range to report. Default: to the end of the image. */
  lengthBytes?: number;
  /** Report whole RADOS objects (coarser, much faster on big images without fast-diff). */
  wholeObject?: boolean;
}

/** Runs `rbd_diff_iterate2` on `handle` and collects its extents in offset order. */
export async function diffImage(
  handle: ImageHandle,
  options: DiffOptions,
  stat: () => Promise<{ sizeBytes: number }>,
): Promise<DiffExtent[]> {
  const from = options.fromSnapshot === undefined
    ? null
    : cString(checkName("snapshot", options.fromSnapshot));
  const offset = checkBytes("offsetBytes", options.offsetBytes ?? 0);
  const length = checkBytes(
    "lengthBytes",
    options.lengthBytes ?? (await stat()).sizeBytes - offset,
  );
  const extents: DiffExtent[] = [];
  const callback = Deno.UnsafeCallback.threadSafe(
    { parameters: ["u64", "usize", "i32", "pointer"], result: "i32" },
    (off, len, exists) => {
      extents.push({ offsetBytes: Number(off), lengthBytes: Number(len), exists: exists !== 0 });
      return 0;
    },
  );
  try {
    await handle.run(async (image) => {
      const call = ceph().rbd.rbd_diff_iterate2(
        image,
        from,
        BigInt(offset),
        BigInt(length),
        0,
        options.wholeObject ? 1 : 0,
        callback.pointer,
        null,
      );
      const rc = from ? await held(call, from) : await call;
      const since = options.fromSnapshot ? ` since snapshot ${options.fromSnapshot}` : "";
      check(rc, `diff of ${handle.label}${since}`);
    });
  } finally {
    callback.close();
  }
  return extents.sort((a, b) => a.offsetBytes - b.offsetBytes);
}
