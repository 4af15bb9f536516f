/**
 * The `zstd-wasm` codec: zstd compiled to WebAssembly (`@bokuweb/zstd-wasm`). Slower than
 * `zstd-native` but independent of the runtime's `node:zlib`; its frames are the same
 * standard zstd frames, so each codec decodes the other's.
 *
 * @module
 */

import { compress, decompress, init } from "@bokuweb/zstd-wasm";
import { Algorithm, type Codec } from "../../agent/codec/codec.ts";
import {
  assertDecodedLength,
  assertZstdPayload,
  undecodable,
} from "../../agent/codec/zstd_frame.ts";
import { assertInteger, ErrorCode, PresyncError } from "../../agent/errors.ts";

/** Lowest accepted level, as for `zstd-native`. */
export const ZSTD_WASM_MIN_LEVEL = 1;
/** Highest accepted level, as for `zstd-native`. */
export const ZSTD_WASM_MAX_LEVEL = 19;

/** The library's one-time WebAssembly instantiation, shared by every codec object. */
let initialized: Promise<void> | undefined;

function initOnce(): Promise<void> {
  initialized ??= init().catch((error: unknown) => {
    initialized = undefined; // a later call may try again
    throw new PresyncError(
      ErrorCode.WASM_CORE,
      `zstd-wasm could not load its WebAssembly module: ${(error as Error).message}`,
      { cause: error },
    );
  });
  return initialized;
}

/**
 * Creates the `zstd-wasm` codec once its WebAssembly module is loaded (the first call loads
 * it; later calls reuse it). Frames carry their content size (the library's one-shot
 * `ZSTD_compress` writes it) but no content checksum (the library cannot set that flag).
 *
 * `decompress` checks the frame header against `rawLength` before the library allocates its
 * output, which it sizes from that header.
 *
 * @throws {PresyncError} `WASM_CORE` when the WebAssembly module cannot be loaded
 *
 * @example
 * ```ts
 * import { createZstdWasmCodec } from "./zstd_wasm_codec.ts";
 * const zstd = await createZstdWasmCodec();
 * const block = new TextEncoder().encode("presync ".repeat(1000));
 * console.assert(zstd.decompress(zstd.compress(block, 1), block.length).length === 8000);
 * ```
 */
export async function createZstdWasmCodec(): Promise<Codec> {
  await initOnce();
  return {
    name: "zstd-wasm",
    algorithm: Algorithm.ZSTD,
    defaultLevel: 1,
    compress(block: Uint8Array, level: number): Uint8Array {
      assertInteger("zstd level", level, ZSTD_WASM_MIN_LEVEL, ZSTD_WASM_MAX_LEVEL);
      try {
        return compress(block, level);
      } catch (error) {
        throw new PresyncError(
          ErrorCode.WASM_CORE,
          `zstd-wasm could not compress a ${block.length}-byte block: ${(error as Error).message}`,
          { cause: error },
        );
      }
    },
    decompress(payload: Uint8Array, rawLength: number): Uint8Array {
      // The library allocates what the frame header declares (or defaultHeapSize when it
      // declares nothing), so the header must be checked against rawLength first.
      assertZstdPayload(payload, rawLength);
      let out: Uint8Array;
      try {
        out = decompress(payload, { defaultHeapSize: rawLength });
      } catch (error) {
        throw undecodable(payload, rawLength, "zstd-wasm", error);
      }
      assertDecodedLength(out, rawLength);
      return out;
    },
  };
}
