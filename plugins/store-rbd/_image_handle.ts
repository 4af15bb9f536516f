/**
 * An open `rbd_image_t` shared by the parts of {@linkcode RbdImage} (I/O, snapshots, metadata,
 * diff): it counts the calls in flight so that closing waits for them (librbd must not see a
 * call on a closed image) and refuses new calls once closing has begun.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { CompletionQueue } from "./_completions.ts";

/** The open image handle and its name for messages, private to this folder. */
export class ImageHandle {
  /** `pool/image` (or `pool/image@snapshot`), for error messages. */
  readonly label: string;
  /** Where the image's aio requests complete. */
  readonly completions: CompletionQueue;
  #pointer: Deno.PointerObject | null;
  #inflight = 0;
  #idle: (() => void)[] = [];

  /** Wraps an image just opened; sets up its completion queue. */
  constructor(pointer: Deno.PointerObject, label: string) {
    this.completions = CompletionQueue.open(pointer, label);
    this.#pointer = pointer;
    this.label = label;
  }

  /** Whether close has begun. */
  get closed(): boolean {
    return this.#pointer === null;
  }

  /** Counts one call in flight and returns the pointer for it; pair with {@linkcode end}. */
  begin(): Deno.PointerObject {
    if (this.#pointer === null) {
      throw new PresyncError(
        ErrorCode.IO,
        `rbd image ${this.label} is closed: open it again before using it`,
      );
    }
    this.#inflight++;
    return this.#pointer;
  }

  /** Ends a call counted by {@linkcode begin}. */
  end(): void {
    this.#inflight--;
    if (this.#inflight === 0) { for (const wake of this.#idle.splice(0)) wake(); }
  }

  /** Runs `call` with the pointer, counted in flight. */
  async run<T>(call: (image: Deno.PointerObject) => Promise<T>): Promise<T> {
    const image = this.begin();
    try {
      return await call(image);
    } finally {
      this.end();
    }
  }

  /**
   * Refuses new calls, waits for those in flight, then runs `close` on the pointer once and
   * releases the completion queue. Returns false when the handle was closed already.
   */
  async close(close: (image: Deno.PointerObject) => Promise<void>): Promise<boolean> {
    const image = this.#pointer;
    if (image === null) return false;
    this.#pointer = null;
    while (this.#inflight > 0) await new Promise<void>((wake) => this.#idle.push(wake));
    try {
      await close(image);
    } finally {
      this.completions.close();
    }
    return true;
  }
}
