/**
 * A window of asynchronous writes to one image: up to `depth` in flight, new ones waiting for
 * a free slot. Synchronous writes are bound by one round trip each (~1.3 ms on loopback); a
 * window of 16 keeps the OSD busy instead.
 *
 * @module
 */

import { assertInteger } from "../../agent/errors.ts";

/** What a window writes through: an {@linkcode RbdImage}, or a stand-in in tests. */
export interface AioTarget {
  /** Writes `data` at `offsetBytes`; settles when the write is acknowledged. */
  write(offsetBytes: number, data: Uint8Array): Promise<void>;
  /** Makes the range read as zeros; settles when acknowledged. */
  writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void>;
}

/** Deepest window accepted. */
export const MAX_AIO_DEPTH = 1024;

/**
 * Writes through a window of `depth` requests in flight. The first failure is kept: every
 * later call of {@linkcode write} and {@linkcode drain} throws it, so a commit never goes on
 * past a lost write.
 *
 * @example
 * ```ts ignore
 * const window = new AioWindow(image, 16);
 * for (const [offset, bytes] of blocks) await window.write(offset, bytes);
 * await window.drain();
 * await image.flush();
 * ```
 */
export class AioWindow {
  /** How many requests may be in flight at once. */
  readonly depth: number;
  readonly #image: AioTarget;
  #inflight = 0;
  #error: unknown;
  #failed = false;
  #waiters: (() => void)[] = [];

  /** A window of `depth` (1 to {@linkcode MAX_AIO_DEPTH}) requests on `image`. */
  constructor(image: AioTarget, depth: number) {
    assertInteger("depth", depth, 1, MAX_AIO_DEPTH);
    this.#image = image;
    this.depth = depth;
  }

  /** Requests in flight now. */
  get inflight(): number {
    return this.#inflight;
  }

  #throwIfFailed(): void {
    if (this.#failed) throw this.#error;
  }

  async #slot(): Promise<void> {
    this.#throwIfFailed();
    while (this.#inflight >= this.depth) {
      await new Promise<void>((wake) => this.#waiters.push(wake));
      this.#throwIfFailed();
    }
  }

  #track(request: Promise<void>): void {
    this.#inflight++;
    const done = () => {
      this.#inflight--;
      for (const wake of this.#waiters.splice(0)) wake();
    };
    request.then(done, (err) => {
      if (!this.#failed) {
        this.#failed = true;
        this.#error = err;
      }
      done();
    });
  }

  /**
   * Waits for a free slot, then starts writing `data` at `offsetBytes` and returns. `data` must
   * not change until {@linkcode drain} returns.
   */
  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    await this.#slot();
    this.#track(this.#image.write(offsetBytes, data));
  }

  /** Like {@linkcode write} for a range that must read as zeros. */
  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.#slot();
    this.#track(this.#image.writeZeroes(offsetBytes, lengthBytes));
  }

  /** Waits until nothing is in flight; throws the first failure of any request. */
  async drain(): Promise<void> {
    while (this.#inflight > 0) await new Promise<void>((wake) => this.#waiters.push(wake));
    this.#throwIfFailed();
  }
}
