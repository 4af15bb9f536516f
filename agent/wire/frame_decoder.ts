import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";
import {
  type Frame,
  FRAME_HEADER_BYTES,
  FrameFlag,
  FrameType,
  MAX_FRAME_PAYLOAD_LIMIT,
  MIN_FRAME_PAYLOAD_LIMIT,
  verifyFrameTag,
} from "./frame.ts";

/** Options of {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /** The largest payload accepted, in bytes; a longer declared length is rejected unread. */
  maxFramePayload: number;
  /** The 32-byte key the peer tags its frames with. */
  tagKey: Uint8Array;
}

/**
 * Turns the bytes of one direction of a session into frames: pure (bytes in, frames out),
 * incremental (chunks may split frames anywhere), bounded (it holds at most one frame of
 * `18 + maxFramePayload` bytes) and strict (every malformed input is a {@linkcode PresyncError},
 * after which the decoder stays failed).
 *
 * @example
 * ```ts
 * import { encodeFrame, FrameType } from "./frame.ts";
 * import { FrameDecoder } from "./frame_decoder.ts";
 * const key = new Uint8Array(32);
 * const bytes = encodeFrame(
 *   { type: FrameType.PING, flags: 0, streamId: 0, payload: new Uint8Array(8) },
 *   key,
 *   0,
 * );
 * const decoder = new FrameDecoder({ maxFramePayload: 65536, tagKey: key });
 * console.assert(decoder.push(bytes.subarray(0, 5)).length === 0);
 * console.assert(decoder.push(bytes.subarray(5))[0].type === FrameType.PING);
 * ```
 */
export class FrameDecoder {
  readonly #maxFramePayload: number;
  readonly #tagKey: Uint8Array;
  readonly #header = new Uint8Array(FRAME_HEADER_BYTES);
  #headerFill = 0;
  #frame: Uint8Array | undefined;
  #frameFill = 0;
  #seq = 0;
  #failure: PresyncError | undefined;
  #largestAllocation = 0;

  constructor(options: FrameDecoderOptions) {
    assertInteger(
      "maxFramePayload",
      options.maxFramePayload,
      MIN_FRAME_PAYLOAD_LIMIT,
      MAX_FRAME_PAYLOAD_LIMIT,
    );
    this.#maxFramePayload = options.maxFramePayload;
    this.#tagKey = options.tagKey;
  }

  /** Frames decoded so far. */
  get framesDecoded(): number {
    return this.#seq;
  }

  /** The largest buffer this decoder has allocated, in bytes (≤ 18 + `maxFramePayload`). */
  get largestAllocation(): number {
    return this.#largestAllocation;
  }

  /**
   * Feeds the next bytes; returns the frames they complete, in order.
   *
   * @throws {PresyncError} `FRAME_TOO_LARGE`, `FRAME_CORRUPT` or `PROTOCOL_VIOLATION`; once
   *   thrown, every later call throws the same error
   */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failure) throw this.#failure;
    try {
      return this.#push(chunk);
    } catch (error) {
      this.#failure = error instanceof PresyncError ? error : new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `session frame could not be decoded: ${error}`,
        { cause: error },
      );
      throw this.#failure;
    }
  }

  #push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#frame === undefined) {
        const take = Math.min(FRAME_HEADER_BYTES - this.#headerFill, chunk.length - offset);
        this.#header.set(chunk.subarray(offset, offset + take), this.#headerFill);
        this.#headerFill += take;
        offset += take;
        if (this.#headerFill < FRAME_HEADER_BYTES) break;
        this.#startFrame();
      }
      const frame = this.#frame!;
      const take = Math.min(frame.length - this.#frameFill, chunk.length - offset);
      frame.set(chunk.subarray(offset, offset + take), this.#frameFill);
      this.#frameFill += take;
      offset += take;
      if (this.#frameFill === frame.length) frames.push(this.#finishFrame());
    }
    return frames;
  }

  #startFrame(): void {
    const length = new DataView(this.#header.buffer).getUint32(6, true);
    if (length > this.#maxFramePayload) {
      throw new PresyncError(
        ErrorCode.FRAME_TOO_LARGE,
        `session frame #${this.#seq} declares a ${length}-byte payload: the maximum agreed ` +
          `is ${this.#maxFramePayload} bytes (a corrupted length or a misbehaving peer)`,
      );
    }
    this.#frame = new Uint8Array(FRAME_HEADER_BYTES + length);
    this.#largestAllocation = Math.max(this.#largestAllocation, this.#frame.length);
    this.#frame.set(this.#header);
    this.#frameFill = FRAME_HEADER_BYTES;
  }

  #finishFrame(): Frame {
    const bytes = this.#frame!;
    this.#frame = undefined;
    this.#headerFill = 0;
    verifyFrameTag(bytes, this.#tagKey, this.#seq);
    const seq = this.#seq++;
    const frame: Frame = {
      type: bytes[0] as FrameType,
      flags: bytes[1],
      streamId: new DataView(bytes.buffer).getUint32(2, true),
      payload: bytes.subarray(FRAME_HEADER_BYTES),
    };
    validateFrame(frame, seq);
    return frame;
  }
}

const PAYLOAD_BYTES: Record<number, number> = {
  [FrameType.OPEN]: 1,
  [FrameType.RESET]: 4,
  [FrameType.WINDOW]: 4,
  [FrameType.PING]: 8,
  [FrameType.GOAWAY]: 4,
};

const ALLOWED_FLAGS: Record<number, number> = {
  [FrameType.OPEN]: 0,
  [FrameType.DATA]: FrameFlag.FIN,
  [FrameType.RESET]: 0,
  [FrameType.WINDOW]: 0,
  [FrameType.PING]: FrameFlag.ACK,
  [FrameType.GOAWAY]: 0,
};

function violation(seq: number, frame: Frame, expected: string): PresyncError {
  return new PresyncError(
    ErrorCode.PROTOCOL_VIOLATION,
    `session frame #${seq} (type ${frame.type}, flags ${frame.flags}, stream ${frame.streamId}, ` +
      `${frame.payload.length}-byte payload) is malformed: ${expected}`,
  );
}

/**
 * Checks the fields of one frame against the frame-type table (`docs/PROTOCOL.md`): known
 * type, allowed flags, payload size, stream id 0 exactly for session frames, priority ≤ 3,
 * WINDOW increment ≥ 1. Stream-state rules (parity, reuse) belong to the session.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` naming the broken rule
 */
export function validateFrame(frame: Frame, seq = 0): void {
  const allowed = ALLOWED_FLAGS[frame.type];
  if (allowed === undefined) {
    throw violation(seq, frame, "expected a frame type from 1 to 6");
  }
  if ((frame.flags & ~allowed) !== 0) {
    throw violation(seq, frame, `expected flags within 0x${allowed.toString(16)}`);
  }
  const size = PAYLOAD_BYTES[frame.type];
  if (size !== undefined && frame.payload.length !== size) {
    throw violation(seq, frame, `expected a ${size}-byte payload`);
  }
  const sessionLevel = frame.type === FrameType.PING || frame.type === FrameType.GOAWAY;
  if (sessionLevel && frame.streamId !== 0) throw violation(seq, frame, "expected stream 0");
  const streamOnly = frame.type === FrameType.OPEN || frame.type === FrameType.DATA ||
    frame.type === FrameType.RESET;
  if (streamOnly && frame.streamId === 0) throw violation(seq, frame, "expected a stream id ≥ 1");
  if (frame.type === FrameType.OPEN && frame.payload[0] > 3) {
    throw violation(seq, frame, "expected priority 0, 1, 2 or 3");
  }
  if (frame.type === FrameType.WINDOW && readU32(frame.payload) === 0) {
    throw violation(seq, frame, "expected a window increment ≥ 1");
  }
}

/** Reads the u32 LE at the start of `bytes`. */
export function readU32(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
}
