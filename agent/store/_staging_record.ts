import { maxPatchLength } from "../codec/block_patch.ts";
import { ErrorCode, PresyncError } from "../errors.ts";

/** "PSR1" read as a little-endian u32: the first bytes of every staging record. */
export const RECORD_MAGIC = 0x31525350;
/** Bytes of a record header; the payload follows. */
export const RECORD_HEADER_BYTES = 48;
/** Record kinds. */
export const KIND_ZERO = 0;
export const KIND_DATA = 1;
/**
 * A block staged as a patch over its committed copy: the payload is the BLAKE3 of the patch
 * (32 bytes), then the patch (`codec/block_patch.ts`); the header's hash is the whole
 * rebuilt block's.
 */
export const KIND_PATCH = 2;
/** Bytes of the patch digest that opens a patch record's payload. */
export const PATCH_DIGEST_BYTES = 32;

/** The longest payload a record of `kind` may have, for blocks of at most `blockSize` bytes. */
export function maxPayloadLength(kind: number, blockSize: number): number {
  return kind === KIND_PATCH ? PATCH_DIGEST_BYTES + maxPatchLength(blockSize) : blockSize;
}

/** A decoded record header (docs/STORE.md, "Staging log"). */
export interface RecordHeader {
  block: number;
  kind: number;
  length: number;
  hash: Uint8Array;
}

/** Encodes a record header into the first 48 bytes of `into`. */
export function encodeRecordHeader(header: RecordHeader, into: Uint8Array): void {
  const view = new DataView(into.buffer, into.byteOffset, RECORD_HEADER_BYTES);
  view.setUint32(0, RECORD_MAGIC, true);
  view.setUint32(4, header.block, true);
  view.setUint32(8, header.length, true);
  into.fill(0, 12, 16);
  into[12] = header.kind;
  into.set(header.hash, 16);
}

/**
 * Decodes a record header found at log offset `offset`, checking magic, kind, that the
 * reserved bytes 13–15 are zero (as written) and that the payload length agrees with the kind
 * and the block size `blockSize` (see {@linkcode maxPayloadLength}). Throws `STORE_CORRUPT`.
 */
export function decodeRecordHeader(
  bytes: Uint8Array,
  offset: number,
  blockSize: number,
): RecordHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, RECORD_HEADER_BYTES);
  const magic = view.getUint32(0, true);
  const block = view.getUint32(4, true);
  const length = view.getUint32(8, true);
  const kind = bytes[12];
  const bad = magic !== RECORD_MAGIC
    ? `bad magic 0x${magic.toString(16)}`
    : kind > KIND_PATCH
    ? `unknown kind ${kind}`
    : bytes[13] | bytes[14] | bytes[15]
    ? `reserved bytes 13-15 are not zero`
    : (kind === KIND_ZERO) !== (length === 0) ||
        (kind === KIND_PATCH && length <= PATCH_DIGEST_BYTES) ||
        length > maxPayloadLength(kind, blockSize)
    ? `length ${length} does not fit kind ${kind} (at most ${maxPayloadLength(kind, blockSize)})`
    : null;
  if (bad) {
    throw new PresyncError(
      ErrorCode.STORE_CORRUPT,
      `staging log record at byte ${offset} is damaged: ${bad}`,
    );
  }
  return { block, kind, length, hash: bytes.slice(16, 48) };
}
