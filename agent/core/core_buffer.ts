import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import { alloc, core, free, mem } from "./_wasm.ts";

const bufferRegistry = new FinalizationRegistry<number>(free);

/**
 * Bytes inside WASM memory, for data the core should read where it lies: a file read into
 * {@linkcode CoreBuffer.view} is hashed, pre-filtered or zero-checked by the functions of
 * this module without being copied (they recognise views of WASM memory).
 *
 * A view stops working when WASM memory grows (any allocation may grow it), so take it right
 * before use and never keep it across an `await`; {@linkcode CoreBuffer.fill} takes care of
 * that for asynchronous reads. Release with `free()` or `using`.
 *
 * @example
 * ```ts
 * import { CoreBuffer, zeroBlocks } from "./mod.ts";
 * using buffer = new CoreBuffer(8192);
 * await buffer.fill(8192, (into) => Promise.resolve(into.length));
 * console.assert(zeroBlocks(buffer.view(8192), 4096).length === 1);
 * ```
 */
export class CoreBuffer {
  /** Capacity in bytes. */
  readonly size: number;
  #ptr: number;

  /** Allocates `size` bytes of WASM memory. */
  constructor(size: number) {
    assertInteger("buffer size", size, 1, 2 ** 31);
    this.size = size;
    this.#ptr = alloc(size);
    bufferRegistry.register(this, this.#ptr, this);
  }

  /** A view of the first `length` bytes, valid until WASM memory next grows. */
  view(length = this.size): Uint8Array {
    assertInteger("view length", length, 0, this.size);
    if (this.#ptr === 0) {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "CoreBuffer used after free()");
    }
    return mem().subarray(this.#ptr, this.#ptr + length);
  }

  /**
   * Lets `read` fill the first `length` bytes, asynchronously, and returns what it returned
   * (the bytes it read). Should WASM memory grow while `read` runs, the view it was given may
   * no longer be the buffer's memory: then it is called again with a fresh view, so the
   * bytes are always where `view()` sees them. `read` must therefore be safe to repeat.
   */
  async fill(length: number, read: (into: Uint8Array) => Promise<number>): Promise<number> {
    for (;;) {
      const memory = core.memory.buffer;
      const n = await read(this.view(length));
      if (core.memory.buffer === memory) return n;
    }
  }

  /** Releases the memory. Idempotent. */
  free(): void {
    if (this.#ptr === 0) return;
    bufferRegistry.unregister(this);
    free(this.#ptr);
    this.#ptr = 0;
  }

  [Symbol.dispose](): void {
    this.free();
  }
}
