import { ErrorCode } from "../errors.ts";
import { FRAME_HEADER_BYTES, GoAwayReason } from "./frame.ts";

/** The GOAWAY reason sent when the session fails with a given error code. */
export const GOAWAY_REASON_FOR: Partial<Record<string, number>> = {
  [ErrorCode.PROTOCOL_VIOLATION]: GoAwayReason.PROTOCOL_ERROR,
  [ErrorCode.FRAME_TOO_LARGE]: GoAwayReason.PROTOCOL_ERROR,
  [ErrorCode.FLOW_CONTROL]: GoAwayReason.FLOW_CONTROL_ERROR,
  [ErrorCode.FRAME_CORRUPT]: GoAwayReason.FRAME_CORRUPT,
  [ErrorCode.LINK_DEAD]: GoAwayReason.IDLE_TIMEOUT,
};

/** A u32 LE payload. */
export function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, true);
  return out;
}

/** An encoded frame with its tag field still empty (sealed when sent). */
export function frameBytes(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  const view = new DataView(out.buffer);
  out[0] = type;
  out[1] = flags;
  view.setUint32(2, streamId, true);
  view.setUint32(6, payload.length, true);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}
