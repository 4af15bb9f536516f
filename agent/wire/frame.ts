import { blake3Keyed } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { constantTimeEqual } from "../bytes.ts";

/** Bytes in a session frame header (`docs/PROTOCOL.md`, "Session layer", "Frame"). */
export const FRAME_HEADER_BYTES = 18;
/** Bytes of the integrity tag at header offset 10. */
export const FRAME_TAG_BYTES = 8;
/** The largest `maxFramePayload` either side may announce, in bytes (1 MiB). */
export const MAX_FRAME_PAYLOAD_LIMIT = 1 << 20;
/** The smallest `maxFramePayload` either side may announce, in bytes. */
export const MIN_FRAME_PAYLOAD_LIMIT = 1024;

const TAG_OFFSET = 10;

/** Session frame types; the numbers are on the wire. */
export const FrameType = {
  OPEN: 0x01,
  DATA: 0x02,
  RESET: 0x03,
  WINDOW: 0x04,
  PING: 0x05,
  GOAWAY: 0x06,
} as const;

/** One of the {@linkcode FrameType} values. */
export type FrameType = typeof FrameType[keyof typeof FrameType];

/** Frame flag bits. `FIN` ends a stream's DATA; `ACK` marks a PING as a PONG. */
export const FrameFlag = { FIN: 0x01, ACK: 0x02 } as const;

/**
 * Stream priority classes, as the OPEN frame carries them. Sent in the order of
 * {@linkcode PRIORITY_ORDER}: control, on-demand, memory, bulk. `MEMORY` (a VM's migration
 * stream, `presync migrate`) came later than bulk, hence its larger number.
 */
export const Priority = { CONTROL: 0, ON_DEMAND: 1, BULK: 2, MEMORY: 3 } as const;

/** The priorities from the most urgent: a VM's memory overtakes bulk, not on-demand reads. */
export const PRIORITY_ORDER: readonly Priority[] = [0, 1, 3, 2];

/** Number of priority classes (the length of per-priority counters). */
export const PRIORITY_CLASSES = 4;

/** One of the {@linkcode Priority} values. */
export type Priority = typeof Priority[keyof typeof Priority];

/** RESET codes on the wire. */
export const ResetCode = { CANCELLED: 0, REFUSED: 1, INTERNAL: 2 } as const;

/** GOAWAY reasons on the wire. */
export const GoAwayReason = {
  NORMAL: 0,
  PROTOCOL_ERROR: 1,
  FLOW_CONTROL_ERROR: 2,
  FRAME_CORRUPT: 3,
  IDLE_TIMEOUT: 4,
} as const;

/** A decoded (or to-be-encoded) session frame. `payload` may be a view into a larger buffer. */
export interface Frame {
  /** What the frame does. */
  type: FrameType;
  /** Flag bits ({@linkcode FrameFlag}). */
  flags: number;
  /** The stream it belongs to; 0 for the session itself. */
  streamId: number;
  /** Its payload, at most the receiver's `maxFramePayload` bytes. */
  payload: Uint8Array;
}

/**
 * Encodes a frame with its integrity tag: the first 8 bytes of keyed BLAKE3 (`tagKey`) over
 * the frame with the tag field holding `seq`, the number of frames sent before it in this
 * direction. Pure; the caller owns the sequence counter.
 *
 * @example
 * ```ts
 * import { encodeFrame, FrameType } from "./frame.ts";
 * const bytes = encodeFrame(
 *   { type: FrameType.PING, flags: 0, streamId: 0, payload: new Uint8Array(8) },
 *   new Uint8Array(32),
 *   0,
 * );
 * console.assert(bytes.length === 18 + 8);
 * ```
 */
export function encodeFrame(frame: Frame, tagKey: Uint8Array, seq: number): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + frame.payload.length);
  const view = new DataView(out.buffer);
  out[0] = frame.type;
  out[1] = frame.flags;
  view.setUint32(2, frame.streamId, true);
  view.setUint32(6, frame.payload.length, true);
  out.set(frame.payload, FRAME_HEADER_BYTES);
  sealFrame(out, tagKey, seq);
  return out;
}

/** Writes the tag of the complete frame in `frame` (header and payload) in place. */
export function sealFrame(frame: Uint8Array, tagKey: Uint8Array, seq: number): void {
  frame.set(computeTag(frame, tagKey, seq), TAG_OFFSET);
}

/**
 * Checks the tag of the complete frame in `frame`; restores the tag bytes afterwards.
 *
 * @throws {PresyncError} `FRAME_CORRUPT` when the tag does not match
 */
export function verifyFrameTag(frame: Uint8Array, tagKey: Uint8Array, seq: number): void {
  const received = frame.slice(TAG_OFFSET, TAG_OFFSET + FRAME_TAG_BYTES);
  const expected = computeTag(frame, tagKey, seq);
  frame.set(received, TAG_OFFSET);
  if (!constantTimeEqual(received, expected)) {
    throw new PresyncError(
      ErrorCode.FRAME_CORRUPT,
      `session frame #${seq} failed its integrity check (type byte ${frame[0]}, ` +
        `${frame.length - FRAME_HEADER_BYTES}-byte payload): the bytes were corrupted, dropped ` +
        `or replayed in flight; the session is closed and should be reconnected`,
      { retryable: true },
    );
  }
}

function computeTag(frame: Uint8Array, tagKey: Uint8Array, seq: number): Uint8Array {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  view.setBigUint64(TAG_OFFSET, BigInt(seq), true);
  return blake3Keyed(tagKey, frame, FRAME_TAG_BYTES);
}
