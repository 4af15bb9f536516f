/**
 * librbd aio completions as promises. One thread-safe callback serves every completion of the
 * process: librbd calls it from its own threads, Deno runs it on the event loop, and it
 * resolves the promise of that completion with the operation's return value (bytes, or a
 * negative errno). The callback keeps the event loop alive only while completions are pending.
 *
 * @module
 */

import { address, ceph, PointerOut } from "./_librbd.ts";
import { check } from "./rbd_error.ts";

type Settle = (result: number) => void;

const pending = new Map<bigint, Settle>();
let callback:
  | Deno.UnsafeCallback<{ parameters: ["pointer", "pointer"]; result: "void" }>
  | undefined;

function completionCallback() {
  if (callback) return callback;
  const { rbd } = ceph();
  callback = Deno.UnsafeCallback.threadSafe(
    { parameters: ["pointer", "pointer"], result: "void" },
    (completion) => {
      const key = address(completion);
      const settle = pending.get(key);
      const result = Number(rbd.rbd_aio_get_return_value(completion));
      rbd.rbd_aio_release(completion);
      if (!settle) return;
      pending.delete(key);
      callback!.unref();
      settle(result);
    },
  );
  callback.unref();
  return callback;
}

/** A completion ready to hand to one `rbd_aio_*` call. */
export interface Completion {
  /** The `rbd_completion_t` to pass to the call. */
  readonly pointer: Deno.PointerValue;
  /** The operation's return value once librbd completes it. */
  readonly result: Promise<number>;
  /** Call when the `rbd_aio_*` call itself failed: releases the unused completion. */
  abandon(): void;
}

/** Creates a completion whose promise settles when librbd completes the operation. */
export function createCompletion(): Completion {
  const { rbd } = ceph();
  const cb = completionCallback();
  const out = new PointerOut();
  check(rbd.rbd_aio_create_completion(null, cb.pointer, out.bytes), "creating an aio completion");
  const pointer = out.pointer;
  const key = address(pointer);
  let settle!: Settle;
  const result = new Promise<number>((resolve) => settle = resolve);
  pending.set(key, settle);
  cb.ref();
  return {
    pointer,
    result,
    abandon() {
      if (!pending.delete(key)) return;
      cb.unref();
      rbd.rbd_aio_release(pointer);
    },
  };
}
