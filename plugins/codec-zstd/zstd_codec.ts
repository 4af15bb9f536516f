/**
 * The `zstd-native` codec: zstd through `node:zlib` (the zstd library linked into Deno), the
 * fastest codec measured here (see `DEFAULT_CODEC_NAME` in `agent/codec/mod.ts`).
 *
 * @module
 */

import { constants, zstdCompressSync, zstdDecompressSync, type ZstdOptions } from "node:zlib";
import { Algorithm, type Codec } from "../../agent/codec/codec.ts";
import {
  assertDecodedLength,
  assertZstdPayload,
  readZstdFrame,
  undecodable,
} from "../../agent/codec/zstd_frame.ts";
import { assertInteger, ErrorCode, PresyncError } from "../../agent/errors.ts";

/** Lowest accepted level; zstd's negative "fast" levels are not offered. */
export const ZSTD_MIN_LEVEL = 1;
/** Highest accepted level; 20..22 ("ultra") need large windows and are not offered. */
export const ZSTD_MAX_LEVEL = 19;

/** Smallest `chunkSize` node:zlib accepts (`zlib.constants.Z_MIN_CHUNK`). */
const MIN_CHUNK_BYTES = 64;

/**
 * `pledgedSrcSize` makes zstd write Frame_Content_Size into the frame header. Deno 2.9's
 * `node:zlib` honours it (as Node 24 does) but its bundled type declarations lack it.
 */
interface PledgedZstdOptions extends ZstdOptions {
  pledgedSrcSize: number;
}

/** Options of {@linkcode createZstdCodec}. */
export interface ZstdCodecOptions {
  /**
   * Append zstd's 4-byte XXH64 content checksum to every frame, so corruption inside the
   * payload is detected while decoding, before the BLAKE3 check. Default true. Measured cost
   * (64 MiB of mixed data in 64 KiB blocks, level 1; `scripts/_bench_codecs.ts` and 7
   * interleaved runs): compression 2-10% slower, decompression 10-20% slower.
   */
  checksum?: boolean;
}

/** `ZSTD_COMPRESSBOUND`: the largest frame zstd makes of `n` bytes. */
function compressBound(n: number): number {
  const small = 128 * 1024;
  return n + (n >>> 8) + (n < small ? (small - n) >>> 11 : 0);
}

/**
 * Deno 2.9's `zstdCompressSync` sometimes appends empty zstd frames (9 bytes each, or 13
 * with a checksum; seen: one or two) when the output spans more than one of its internal
 * output chunks. A presync zstd payload is exactly one frame, so empty ones are cut off.
 */
function withoutTrailingEmptyFrames(out: Uint8Array): Uint8Array {
  const first = readZstdFrame(out);
  for (let at = first.frameBytes; at < out.length;) {
    const trailing = readZstdFrame(out.subarray(at));
    // An empty frame may also leave its content size out: it then decodes to nothing.
    const empty = trailing.contentSize === 0 ||
      (trailing.contentSize === undefined &&
        zstdDecompressSync(out.subarray(at, at + trailing.frameBytes)).length === 0);
    if (!empty) {
      throw new PresyncError(
        ErrorCode.FRAME_MALFORMED,
        `node:zlib produced ${out.length - first.frameBytes} bytes after the zstd frame: ` +
          `expected only empty frames, received a frame declaring ` +
          `${trailing.contentSize ?? "no"} content size`,
      );
    }
    at += trailing.frameBytes;
  }
  return out.subarray(0, first.frameBytes);
}

/**
 * Creates the `zstd-native` codec. Frames declare their content size (the block length is
 * pledged), as presync's zstd algorithm requires, and decode with any RFC 8878 decoder.
 *
 * @example
 * ```ts
 * import { createZstdCodec } from "./zstd_codec.ts";
 * const zstd = createZstdCodec();
 * const block = new TextEncoder().encode("presync ".repeat(1000));
 * const payload = zstd.compress(block, 1);
 * console.assert(zstd.decompress(payload, block.length).length === block.length);
 * ```
 */
export function createZstdCodec(options: ZstdCodecOptions = {}): Codec {
  const checksumFlag = (options.checksum ?? true) ? 1 : 0;
  const paramsByLevel = new Map<number, ZstdOptions["params"]>();
  return {
    name: "zstd-native",
    algorithm: Algorithm.ZSTD,
    defaultLevel: 1,
    compress(block: Uint8Array, level: number): Uint8Array {
      let params = paramsByLevel.get(level);
      if (params === undefined) {
        assertInteger("zstd level", level, ZSTD_MIN_LEVEL, ZSTD_MAX_LEVEL);
        params = {
          [constants.ZSTD_c_compressionLevel]: level,
          [constants.ZSTD_c_checksumFlag]: checksumFlag,
        };
        paramsByLevel.set(level, params);
      }
      const pledged: PledgedZstdOptions = {
        params,
        pledgedSrcSize: block.length,
        // One output chunk that any frame of this block fits in (zstd's compress bound plus
        // headroom): node:zlib then neither concatenates chunks nor appends empty frames.
        chunkSize: Math.max(MIN_CHUNK_BYTES, compressBound(block.length) + 64),
      };
      const out = zstdCompressSync(block, pledged);
      return withoutTrailingEmptyFrames(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    },
    decompress(payload: Uint8Array, rawLength: number): Uint8Array {
      assertZstdPayload(payload, rawLength);
      let out: Uint8Array;
      try {
        out = zstdDecompressSync(payload, {
          // Must be >= 1; an empty frame then still decodes to 0 bytes.
          maxOutputLength: Math.max(1, rawLength),
          // One output chunk that the block cannot fill: no second chunk, no concatenation
          // (measured ~20% faster than the default on 64 KiB blocks). Node's minimum is 64.
          chunkSize: Math.max(MIN_CHUNK_BYTES, rawLength + 1),
        });
      } catch (error) {
        if ((error as { code?: string }).code !== "ERR_BUFFER_TOO_LARGE") {
          throw undecodable(payload, rawLength, "zstd", error);
        }
        throw new PresyncError(
          ErrorCode.FRAME_MALFORMED,
          `zstd payload decodes to more than its raw length: expected ${rawLength} bytes`,
          { cause: error },
        );
      }
      assertDecodedLength(out, rawLength);
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    },
  };
}
