/**
 * Codec plugin `zstd-wasm`: zstd compiled to WebAssembly; create it with
 * `await createZstdWasmCodec()`.
 *
 * @module
 */

export {
  createZstdWasmCodec,
  ZSTD_WASM_MAX_LEVEL,
  ZSTD_WASM_MIN_LEVEL,
} from "./zstd_wasm_codec.ts";
