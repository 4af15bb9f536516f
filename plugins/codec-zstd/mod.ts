/**
 * Codec plugin `zstd-native`: zstd through `node:zlib`.
 *
 * @module
 */

export {
  createZstdCodec,
  ZSTD_MAX_LEVEL,
  ZSTD_MIN_LEVEL,
  type ZstdCodecOptions,
} from "./zstd_codec.ts";
