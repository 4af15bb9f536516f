/**
 * A structural reader for zstd frames (RFC 8878, section 3.1.1), used to check a received
 * payload *before* any decompressor sees it: exactly one frame, a declared content size equal
 * to the block frame's raw length, well-formed block headers, nothing after the frame. Both
 * zstd codecs call it so they accept and reject exactly the same payloads. It reads headers
 * only (a few bytes per 128 KiB block); it never decompresses.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../errors.ts";

/** Magic number opening every zstd frame, little-endian on the wire (RFC 8878 §3.1.1). */
export const ZSTD_MAGIC = 0xFD2FB528;
/** Skippable frames use magics 0x184D2A50..0x184D2A5F (RFC 8878 §3.1.2); presync never does. */
const SKIPPABLE_MAGIC_MASK = 0xFFFFFFF0;
const SKIPPABLE_MAGIC = 0x184D2A50;
/** Block_Maximum_Size upper bound: 128 KiB whatever the window (RFC 8878 §3.1.1.2.3). */
const MAX_BLOCK_BYTES = 128 * 1024;
const BLOCK_HEADER_BYTES = 3;
const CHECKSUM_BYTES = 4;
/** Block_Type values (RFC 8878 §3.1.1.2.2). */
const BLOCK_RAW = 0;
const BLOCK_RLE = 1;
const BLOCK_RESERVED = 3;

/** What {@linkcode readZstdFrame} learned from a frame's headers. */
export interface ZstdFrameInfo {
  /** Bytes of the magic number plus the frame header. */
  readonly headerBytes: number;
  /** Frame_Content_Size: the decoded length the frame declares, or undefined when absent. */
  readonly contentSize: number | undefined;
  /** Dictionary_ID, 0 when the frame needs no dictionary. */
  readonly dictionaryId: number;
  /** Whether the frame ends with a 4-byte XXH64 content checksum. */
  readonly hasChecksum: boolean;
  /** Number of data blocks. */
  readonly blockCount: number;
  /** A lower bound of the decoded length: the sizes of the raw and RLE blocks added up. */
  readonly minDecodedBytes: number;
  /** Length of the whole frame, from the magic number to the checksum included. */
  readonly frameBytes: number;
}

function malformed(message: string): PresyncError {
  return new PresyncError(ErrorCode.FRAME_MALFORMED, message);
}

function need(bytes: Uint8Array, end: number, what: string): void {
  if (end > bytes.length) {
    throw malformed(
      `zstd payload truncated in the ${what}: expected at least ${end} bytes, ` +
        `received ${bytes.length}`,
    );
  }
}

/** Reads a little-endian unsigned integer of `size` bytes (up to 8) as a number. */
function readUintLE(bytes: Uint8Array, offset: number, size: number): number {
  let value = 0;
  for (let i = size - 1; i >= 0; i--) value = value * 256 + bytes[offset + i];
  return value;
}

/**
 * Reads the zstd frame that starts at `bytes[0]`: its header, then each block header up to
 * the last block, then the checksum if the frame has one. Bytes after the frame are not
 * looked at; compare {@linkcode ZstdFrameInfo.frameBytes} with the length to find them.
 *
 * @throws {PresyncError} `FRAME_MALFORMED` on a wrong magic number, a skippable frame, a set
 *   reserved bit, a reserved block type, a block over 128 KiB or a truncated frame
 *
 * @example
 * ```ts
 * import { readZstdFrame } from "./zstd_frame.ts";
 * import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
 * const payload = createZstdCodec().compress(new Uint8Array(1000).fill(1), 1);
 * console.assert(readZstdFrame(payload).contentSize === 1000);
 * ```
 */
export function readZstdFrame(bytes: Uint8Array): ZstdFrameInfo {
  need(bytes, 5, "frame header");
  const magic = readUintLE(bytes, 0, 4);
  if (magic !== ZSTD_MAGIC) {
    const kind = ((magic & SKIPPABLE_MAGIC_MASK) >>> 0) === SKIPPABLE_MAGIC
      ? "a skippable frame"
      : `0x${magic.toString(16).padStart(8, "0")}`;
    throw malformed(
      `zstd payload does not start with the zstd magic number: expected 0x${
        ZSTD_MAGIC.toString(16)
      }, received ${kind}`,
    );
  }
  const descriptor = bytes[4];
  const fcsFlag = descriptor >>> 6;
  const singleSegment = (descriptor & 0x20) !== 0;
  const hasChecksum = (descriptor & 0x04) !== 0;
  const dictionaryIdFlag = descriptor & 0x03;
  if ((descriptor & 0x08) !== 0) {
    throw malformed(
      `zstd frame header descriptor 0x${descriptor.toString(16)} has the reserved bit 3 set`,
    );
  }
  const windowBytes = singleSegment ? 0 : 1;
  const dictionaryIdBytes = [0, 1, 2, 4][dictionaryIdFlag];
  const contentSizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
  let offset = 5;
  const headerBytes = offset + windowBytes + dictionaryIdBytes + contentSizeBytes;
  need(bytes, headerBytes, "frame header");
  offset += windowBytes;
  const dictionaryId = readUintLE(bytes, offset, dictionaryIdBytes);
  offset += dictionaryIdBytes;
  let contentSize: number | undefined;
  if (contentSizeBytes > 0) {
    contentSize = readUintLE(bytes, offset, contentSizeBytes) + (contentSizeBytes === 2 ? 256 : 0);
  }
  offset = headerBytes;

  let blockCount = 0;
  let minDecodedBytes = 0;
  for (let last = false; !last; blockCount++) {
    need(bytes, offset + BLOCK_HEADER_BYTES, `header of block ${blockCount}`);
    const header = readUintLE(bytes, offset, BLOCK_HEADER_BYTES);
    last = (header & 1) === 1;
    const type = (header >>> 1) & 3;
    const size = header >>> 3;
    if (type === BLOCK_RESERVED) {
      throw malformed(`zstd block ${blockCount} at byte ${offset} has the reserved block type 3`);
    }
    if (size > MAX_BLOCK_BYTES) {
      throw malformed(
        `zstd block ${blockCount} at byte ${offset} declares ${size} bytes: ` +
          `expected at most ${MAX_BLOCK_BYTES}`,
      );
    }
    offset += BLOCK_HEADER_BYTES;
    if (type === BLOCK_RAW || type === BLOCK_RLE) minDecodedBytes += size;
    offset += type === BLOCK_RLE ? 1 : size;
    need(bytes, offset, `content of block ${blockCount}`);
  }
  if (hasChecksum) {
    offset += CHECKSUM_BYTES;
    need(bytes, offset, "content checksum");
  }
  return {
    headerBytes,
    contentSize,
    dictionaryId,
    hasChecksum,
    blockCount,
    minDecodedBytes,
    frameBytes: offset,
  };
}

/**
 * Checks that `payload` is what presync's zstd algorithm id allows on the wire: exactly one
 * zstd frame, no dictionary, a declared content size equal to `rawLength`, and no raw or RLE
 * blocks that would already decode past it. A decoder may then size its output to
 * `rawLength` up front.
 *
 * @throws {PresyncError} `FRAME_MALFORMED` naming the expected and received values
 */
export function assertZstdPayload(payload: Uint8Array, rawLength: number): ZstdFrameInfo {
  const info = readZstdFrame(payload);
  if (info.frameBytes !== payload.length) {
    throw malformed(
      `zstd payload has ${payload.length - info.frameBytes} bytes after its frame: ` +
        `expected one frame of ${info.frameBytes} bytes, received ${payload.length} bytes`,
    );
  }
  if (info.dictionaryId !== 0) {
    throw malformed(
      `zstd frame needs dictionary ${info.dictionaryId}: presync frames never use a dictionary`,
    );
  }
  if (info.contentSize === undefined) {
    throw malformed(
      `zstd frame does not declare its content size: expected ${rawLength}, received none ` +
        "(presync requires it so decoding can be bounded; compress with a known source size)",
    );
  }
  if (info.contentSize !== rawLength) {
    throw malformed(
      `zstd frame content size does not match the block's raw length: expected ${rawLength}, ` +
        `received ${info.contentSize}`,
    );
  }
  if (info.minDecodedBytes > rawLength) {
    throw malformed(
      `zstd frame's raw and RLE blocks alone decode to ${info.minDecodedBytes} bytes: ` +
        `expected at most ${rawLength}`,
    );
  }
  return info;
}

/**
 * The error for a payload the decoder `library` refused (`error`): corrupt, or lying about
 * its size.
 */
export function undecodable(
  payload: Uint8Array,
  rawLength: number,
  library: string,
  error: unknown,
): PresyncError {
  return new PresyncError(
    ErrorCode.FRAME_MALFORMED,
    `zstd payload of ${payload.length} bytes does not decode to exactly ${rawLength} ` +
      `bytes: it is corrupt or lies about its size (${library}: ${(error as Error).message})`,
    { cause: error },
  );
}

/**
 * Checks that a decoder produced exactly `rawLength` bytes.
 *
 * @throws {PresyncError} `FRAME_MALFORMED` naming the expected and received lengths
 */
export function assertDecodedLength(out: Uint8Array, rawLength: number): void {
  if (out.length !== rawLength) {
    throw malformed(
      `zstd payload decodes to the wrong length: expected ${rawLength} bytes, ` +
        `received ${out.length}`,
    );
  }
}
