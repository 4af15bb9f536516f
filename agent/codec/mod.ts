/**
 * Compression of blocks for the wire.
 *
 * Glossary:
 * - **block**: a fixed-size piece of a volume (default 64 KiB; the last block of a volume may
 *   be shorter), the unit the dirty bitmap tracks and the sync engine sends.
 * - **block frame**: one block encoded for the wire: a kind byte, the raw length, a payload
 *   (`docs/PROTOCOL.md`, "Block frames"). An all-zero block is a header-only *zero marker*; a
 *   block that compression does not shrink travels *raw*.
 * - **codec**: a plugin that compresses and decompresses payloads ({@linkcode Codec}), chosen
 *   by name from configuration ({@linkcode codecByName}).
 * - **algorithm**: the compressed format a codec produces, identified on the wire by an id
 *   ({@linkcode Algorithm}). Several codecs may implement one algorithm (`zstd-native` and
 *   `zstd-wasm` both produce standard zstd frames) and decode each other's payloads.
 * - **raw length**: the length of a block before compression and after decompression; the
 *   receiver bounds every allocation by it.
 *
 * @example
 * ```ts
 * import { codecByName, decodeBlockFrame, DEFAULT_CODEC_NAME, encodeBlockFrame } from "./mod.ts";
 * const codec = await codecByName(DEFAULT_CODEC_NAME);
 * const block = new TextEncoder().encode("hello presync ".repeat(4096));
 * const frame = encodeBlockFrame(block, codec);
 * const back = decodeBlockFrame(frame, { maxRawLength: 65536, codecs: [codec] });
 * console.assert(back.length === block.length && frame.length < block.length);
 * ```
 *
 * @module
 */

export { Algorithm, type Codec } from "./codec.ts";
export {
  BLOCK_FRAME_HEADER_BYTES,
  decodeBlockFrame,
  type DecodeBlockFrameOptions,
  encodeBlockFrame,
  type EncodeBlockFrameOptions,
  MAX_RAW_LENGTH,
  ZERO_MARKER_KIND,
} from "./block_frame.ts";
export {
  applyPatch,
  decodePatch,
  encodePatch,
  MAX_PATCH_RUNS,
  maxPatchLength,
  type PatchRun,
} from "./block_patch.ts";
export { CODEC_NAMES, codecByName, type CodecName, DEFAULT_CODEC_NAME } from "./codec_registry.ts";
export { assertZstdPayload, readZstdFrame, ZSTD_MAGIC, type ZstdFrameInfo } from "./zstd_frame.ts";
