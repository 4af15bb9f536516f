/**
 * The codec registry: maps the codec names configuration uses to plugin instances. This is the
 * one place that knows which codec plugins exist.
 *
 * @module
 */

import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { createZstdWasmCodec } from "../../plugins/codec-zstd-wasm/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Codec } from "./codec.ts";

/** Names of the codecs this build knows, as configuration spells them. */
export const CODEC_NAMES = ["zstd-native", "zstd-wasm", "none"] as const;

/** One of {@linkcode CODEC_NAMES}. */
export type CodecName = typeof CODEC_NAMES[number];

/**
 * The codec used when configuration names none: `zstd-native` at its default level 1.
 *
 * Chosen by measurement (`deno run -A scripts/_bench_codecs.ts 64`: 64 MiB of disk-like
 * `mixedData` in 64 KiB blocks, one core, all codecs in the same run, median of 3, several
 * seeds; run-to-run noise is about ±15%): zstd-native level 1 compresses at ~450 MB/s
 * (340-500), zstd-wasm level 1 at ~250 MB/s (200-260), about half. Decompression of 64 KiB
 * blocks is closer (zstd-native 500-950, zstd-wasm 480-650 MB/s). The ratio is the same (2.4:
 * same library, same level). Compression runs on the source host, beside the running VM, so
 * the codec that spends about half the CPU per byte wins. Level 3 buys ~1.5% more ratio for
 * 10-25% less compression speed (zstd-wasm: ~40% less), so level 1 stays the default.
 */
export const DEFAULT_CODEC_NAME: CodecName = "zstd-native";

/**
 * Returns a codec by its configured name. `zstd-wasm` loads its WebAssembly module on first
 * use, hence the promise; the others resolve at once.
 *
 * @throws {PresyncError} `CODEC_UNKNOWN` naming the known codecs when `name` is not one of
 *   them; `WASM_CORE` when the `zstd-wasm` module cannot be loaded
 *
 * @example
 * ```ts
 * import { codecByName, DEFAULT_CODEC_NAME } from "./codec_registry.ts";
 * const codec = await codecByName(DEFAULT_CODEC_NAME);
 * console.assert(codec.name === "zstd-native");
 * ```
 */
export async function codecByName(name: string): Promise<Codec> {
  switch (name as CodecName) {
    case "zstd-native":
      return createZstdCodec();
    case "zstd-wasm":
      return await createZstdWasmCodec();
    case "none":
      return createNoneCodec();
  }
  throw new PresyncError(
    ErrorCode.CODEC_UNKNOWN,
    `unknown codec "${name}": expected one of ${CODEC_NAMES.map((n) => `"${n}"`).join(", ")}`,
  );
}
