/**
 * Block frames: the self-describing encoding of one block for the wire. Pure functions, no
 * I/O; the byte layout is specified in `docs/PROTOCOL.md`, section "Block frames".
 *
 * ```
 * offset 0  kind        u8      0x00 zero marker, 0x01 raw, 0x02 zstd (an Algorithm id)
 * offset 1  rawLength   u32 LE  length of the block once decoded
 * offset 5  payload     ...     empty (zero), the block (raw), or compressed bytes
 * ```
 *
 * @module
 */

import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import { isAllZero } from "./_is_zero.ts";
import { Algorithm, type Codec } from "./codec.ts";

/** Bytes before the payload: kind (1) and raw length (4). */
export const BLOCK_FRAME_HEADER_BYTES = 5;
/** Kind byte of a zero marker: the block is `rawLength` zero bytes and there is no payload. */
export const ZERO_MARKER_KIND = 0x00;
/** Largest raw length a frame can declare (the field is a u32). */
export const MAX_RAW_LENGTH = 0xFFFF_FFFF;

const ALGORITHM_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Algorithm).map(([name, id]) => [id, name.toLowerCase()]),
);

/** Options of {@linkcode encodeBlockFrame}. */
export interface EncodeBlockFrameOptions {
  /** Compression level handed to the codec; defaults to the codec's `defaultLevel`. */
  level?: number;
  /**
   * Zero-block test, e.g. the WASM core's; defaults to a plain TypeScript word loop. Must
   * return true exactly when every byte of the block is zero.
   */
  isZero?: (block: Uint8Array) => boolean;
}

/** Options of {@linkcode decodeBlockFrame}. */
export interface DecodeBlockFrameOptions {
  /** Largest raw length accepted, normally the volume's block size; bounds the allocation. */
  maxRawLength: number;
  /** Codecs able to decode compressed payloads, looked up by their `algorithm` id. */
  codecs: readonly Codec[];
}

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, "0")}`;
}

function malformed(message: string, cause?: unknown): PresyncError {
  return new PresyncError(ErrorCode.FRAME_MALFORMED, message, { cause });
}

function frameOf(kind: number, rawLength: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(BLOCK_FRAME_HEADER_BYTES + payload.length);
  frame[0] = kind;
  new DataView(frame.buffer).setUint32(1, rawLength, true);
  frame.set(payload, BLOCK_FRAME_HEADER_BYTES);
  return frame;
}

/**
 * Encodes one block as a frame: a zero marker when every byte is zero, the codec's payload
 * when it is strictly shorter than the block, the block itself (raw) otherwise.
 *
 * The result is a new array that shares no memory with `block`.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` when the block is longer than 2^32 - 1 bytes or
 *   the level is out of the codec's range
 *
 * @example
 * ```ts
 * import { decodeBlockFrame, encodeBlockFrame } from "./block_frame.ts";
 * import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
 * const zstd = createZstdCodec();
 * const frame = encodeBlockFrame(new Uint8Array(65536), zstd);
 * console.assert(frame.length === 5); // a zero marker
 * const block = decodeBlockFrame(frame, { maxRawLength: 65536, codecs: [zstd] });
 * console.assert(block.length === 65536);
 * ```
 */
export function encodeBlockFrame(
  block: Uint8Array,
  codec: Codec,
  options: EncodeBlockFrameOptions = {},
): Uint8Array {
  assertInteger("block length", block.length, 0, MAX_RAW_LENGTH);
  const isZero = options.isZero ?? isAllZero;
  if (isZero(block)) return frameOf(ZERO_MARKER_KIND, block.length, new Uint8Array(0));
  if (codec.algorithm !== Algorithm.NONE) {
    const payload = codec.compress(block, options.level ?? codec.defaultLevel);
    if (payload.length < block.length) return frameOf(codec.algorithm, block.length, payload);
  }
  return frameOf(Algorithm.NONE, block.length, block);
}

/**
 * Decodes and validates one block frame; `frame` must be exactly one frame. Never allocates
 * more than `maxRawLength` bytes for the block, whatever the frame claims.
 *
 * A raw block is returned as a view into `frame` (no copy); zero and compressed blocks are
 * new arrays. The result always has exactly the raw length the header declares.
 *
 * @throws {PresyncError} `FRAME_MALFORMED` for a truncated header, a raw length over
 *   `maxRawLength`, a payload whose length does not fit its kind, or a payload that does not
 *   decode to exactly the raw length; `CODEC_UNKNOWN` for a kind byte naming an algorithm
 *   this build does not know or no codec in `codecs` implements; `INVALID_ARGUMENT` for a bad
 *   `maxRawLength`
 */
export function decodeBlockFrame(frame: Uint8Array, options: DecodeBlockFrameOptions): Uint8Array {
  assertInteger("maxRawLength", options.maxRawLength, 0, MAX_RAW_LENGTH);
  if (frame.length < BLOCK_FRAME_HEADER_BYTES) {
    throw malformed(
      `block frame truncated: expected at least ${BLOCK_FRAME_HEADER_BYTES} header bytes, ` +
        `received ${frame.length}`,
    );
  }
  const kind = frame[0];
  const rawLength = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
    .getUint32(1, true);
  const payload = frame.subarray(BLOCK_FRAME_HEADER_BYTES);
  const codec = kind === ZERO_MARKER_KIND || kind === Algorithm.NONE
    ? undefined
    : codecFor(kind, options.codecs);
  if (rawLength > options.maxRawLength) {
    throw malformed(
      `block frame declares raw length ${rawLength}: expected at most ${options.maxRawLength}`,
    );
  }
  if (kind === ZERO_MARKER_KIND) {
    if (payload.length !== 0) {
      throw malformed(
        `zero-marker block frame carries a payload: expected 0 bytes, received ${payload.length}`,
      );
    }
    return new Uint8Array(rawLength);
  }
  if (kind === Algorithm.NONE) {
    if (payload.length !== rawLength) {
      throw malformed(
        `raw block frame payload length does not match its raw length: expected ${rawLength} ` +
          `bytes, received ${payload.length}`,
      );
    }
    return payload;
  }
  if (payload.length >= rawLength) {
    throw malformed(
      `compressed block frame payload is not smaller than its raw length: expected fewer than ` +
        `${rawLength} bytes, received ${payload.length} (a sender sends such a block raw)`,
    );
  }
  let block: Uint8Array;
  try {
    block = codec!.decompress(payload, rawLength);
  } catch (error) {
    if (error instanceof PresyncError) throw error;
    throw malformed(
      `${codec!.name} could not decode a ${payload.length}-byte payload of raw length ` +
        `${rawLength}: ${error instanceof Error ? error.message : String(error)}`,
      error,
    );
  }
  if (block.length !== rawLength) {
    throw malformed(
      `${codec!.name} decoded a block of the wrong length: expected ${rawLength} bytes, ` +
        `received ${block.length}`,
    );
  }
  return block;
}

function loadedNames(codecs: readonly Codec[]): string {
  if (codecs.length === 0) return "none";
  return codecs.map((c) => `${c.name} (${hex(c.algorithm)})`).join(", ");
}

function codecFor(kind: number, codecs: readonly Codec[]): Codec {
  const codec = codecs.find((c) => c.algorithm === kind);
  if (codec !== undefined) return codec;
  const name = ALGORITHM_NAMES.get(kind);
  if (name !== undefined) {
    throw new PresyncError(
      ErrorCode.CODEC_UNKNOWN,
      `block frame is compressed with ${name} (kind ${hex(kind)}) but no loaded codec ` +
        `implements it: loaded ${loadedNames(codecs)}`,
    );
  }
  const known = [...ALGORITHM_NAMES].map(([id, n]) => `${hex(id)} (${n})`).join(", ");
  throw new PresyncError(
    ErrorCode.CODEC_UNKNOWN,
    `block frame has unknown kind byte ${hex(kind)}: expected ${hex(ZERO_MARKER_KIND)} ` +
      `(zero marker) or an algorithm id: ${known}; the peer runs a newer presync or the ` +
      "frame is corrupt",
  );
}
