import { blake3Keyed } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { constantTimeEqual } from "../bytes.ts";

/** Bytes in a stripe JOIN record (`docs/PROTOCOL.md`, "Striping"). */
export const STRIPE_JOIN_BYTES = 32;
/** Bytes in a stripe chunk header. */
export const STRIPE_CHUNK_HEADER_BYTES = 24;
/** The largest chunk payload, in bytes; longer writes are cut. */
export const STRIPE_MAX_CHUNK_BYTES = 65536;
/** The most member connections one stripe may have. */
export const STRIPE_MAX_MEMBERS = 16;
/** The JOIN magic, "PSTR". */
export const STRIPE_JOIN_MAGIC: Uint8Array = new Uint8Array([0x50, 0x53, 0x54, 0x52]);
/** The striping format version. */
export const STRIPE_VERSION = 1;
/** Bytes of a stripe group id. */
export const STRIPE_GROUP_ID_BYTES = 16;

const TAG_BYTES = 8;

/** Stripe chunk kinds; the numbers are on the wire. */
export const StripeChunkKind = { DATA: 0x01, END: 0x02 } as const;

/** What a JOIN record says: which stripe a member connection belongs to, and where. */
export interface StripeJoin {
  /** 16 random bytes the client chose for this stripe. */
  groupId: Uint8Array;
  /** This member's position, 0 to `count` − 1. */
  index: number;
  /** How many members the stripe has, 1 to {@linkcode STRIPE_MAX_MEMBERS}. */
  count: number;
}

/** A decoded chunk header. */
export interface StripeChunkHeader {
  /** {@linkcode StripeChunkKind}. */
  kind: number;
  /** Payload bytes that follow (0 for END). */
  length: number;
  /** DATA: the chunk's number in this direction of the stripe; END: DATA chunks sent in total. */
  seq: number;
}

function tag(key: Uint8Array, body: Uint8Array, counter: number): Uint8Array {
  const input = new Uint8Array(body.length + 8);
  input.set(body);
  new DataView(input.buffer).setBigUint64(body.length, BigInt(counter), true);
  return blake3Keyed(key, input, TAG_BYTES);
}

function violation(message: string): PresyncError {
  return new PresyncError(ErrorCode.PROTOCOL_VIOLATION, message);
}

/**
 * Encodes a JOIN record, tagged with the member's client-to-server frame key.
 *
 * @example
 * ```ts
 * import { decodeStripeJoin, encodeStripeJoin } from "./stripe_record.ts";
 * const key = new Uint8Array(32);
 * const join = { groupId: new Uint8Array(16).fill(1), index: 2, count: 4 };
 * console.assert(decodeStripeJoin(encodeStripeJoin(join, key), key).index === 2);
 * ```
 */
export function encodeStripeJoin(join: StripeJoin, key: Uint8Array): Uint8Array {
  const out = new Uint8Array(STRIPE_JOIN_BYTES);
  out.set(STRIPE_JOIN_MAGIC, 0);
  out[4] = STRIPE_VERSION;
  out[5] = join.index;
  out[6] = join.count;
  out.set(join.groupId.subarray(0, STRIPE_GROUP_ID_BYTES), 8);
  out.set(tag(key, out.subarray(0, 24), 0), 24);
  return out;
}

/**
 * Decodes and checks a JOIN record.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` (magic, version, index or count out of range),
 *   `FRAME_CORRUPT` (tag)
 */
export function decodeStripeJoin(bytes: Uint8Array, key: Uint8Array): StripeJoin {
  if (bytes.length !== STRIPE_JOIN_BYTES) {
    throw violation(`expected a ${STRIPE_JOIN_BYTES}-byte stripe JOIN: received ${bytes.length}`);
  }
  if (!STRIPE_JOIN_MAGIC.every((b, i) => bytes[i] === b)) {
    throw violation(
      `expected a stripe JOIN (magic "PSTR"): this listener takes striped connections only`,
    );
  }
  if (!constantTimeEqual(bytes.subarray(24), tag(key, bytes.subarray(0, 24), 0))) {
    throw new PresyncError(ErrorCode.FRAME_CORRUPT, "stripe JOIN failed its integrity check", {
      retryable: true,
    });
  }
  if (bytes[4] !== STRIPE_VERSION) {
    throw violation(`expected stripe version ${STRIPE_VERSION}: received ${bytes[4]}`);
  }
  const join = { index: bytes[5], count: bytes[6], groupId: bytes.slice(8, 24) };
  if (join.count < 1 || join.count > STRIPE_MAX_MEMBERS || join.index >= join.count) {
    throw violation(
      `stripe JOIN must have 1 ≤ count ≤ ${STRIPE_MAX_MEMBERS} and index < count: received ` +
        `index ${join.index}, count ${join.count}`,
    );
  }
  return join;
}

/**
 * Encodes a chunk header; `counter` is the number of chunks sent before it on this member in
 * this direction, `key` the member's frame key for this direction. Pure.
 */
export function encodeStripeChunkHeader(
  header: StripeChunkHeader,
  key: Uint8Array,
  counter: number,
): Uint8Array {
  const out = new Uint8Array(STRIPE_CHUNK_HEADER_BYTES);
  const view = new DataView(out.buffer);
  out[0] = header.kind;
  view.setUint32(4, header.length, true);
  view.setBigUint64(8, BigInt(header.seq), true);
  out.set(tag(key, out.subarray(0, 16), counter), 16);
  return out;
}

/**
 * Decodes and checks a chunk header (the payload is not covered: the session frames inside
 * carry their own tags).
 *
 * @throws {PresyncError} `FRAME_CORRUPT` (tag), `PROTOCOL_VIOLATION` (kind, reserved bytes,
 *   length)
 */
export function decodeStripeChunkHeader(
  bytes: Uint8Array,
  key: Uint8Array,
  counter: number,
): StripeChunkHeader {
  if (!constantTimeEqual(bytes.subarray(16, 24), tag(key, bytes.subarray(0, 16), counter))) {
    throw new PresyncError(
      ErrorCode.FRAME_CORRUPT,
      `stripe chunk #${counter} failed its integrity check: corrupted, dropped or replayed ` +
        `in flight; the stripe is closed and should be reconnected`,
      { retryable: true },
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const header = {
    kind: bytes[0],
    length: view.getUint32(4, true),
    seq: Number(view.getBigUint64(8, true)),
  };
  if (bytes[1] !== 0 || bytes[2] !== 0 || bytes[3] !== 0) {
    throw violation(`stripe chunk #${counter}: reserved bytes must be 0`);
  }
  if (header.kind === StripeChunkKind.DATA) {
    if (header.length < 1 || header.length > STRIPE_MAX_CHUNK_BYTES) {
      throw violation(
        `stripe chunk #${counter}: expected a DATA length from 1 to ${STRIPE_MAX_CHUNK_BYTES}: ` +
          `received ${header.length}`,
      );
    }
  } else if (header.kind === StripeChunkKind.END) {
    if (header.length !== 0) throw violation(`stripe chunk #${counter}: END must be empty`);
  } else {
    throw violation(`stripe chunk #${counter}: expected kind 1 or 2: received ${header.kind}`);
  }
  return header;
}
