import { ErrorCode, PresyncError } from "../errors.ts";
import { ChunkReader } from "../wire/mod.ts";

/** Message kinds on a sync stream (docs/PROTOCOL.md, "Sync protocol"). */
export const MessageKind = {
  /** A JSON request or reply. */
  JSON: 1,
  /** One block: block number, hash and a block frame. */
  BLOCK: 2,
  /**
   * A block's changed runs: block number, hash of the whole new block, and a block frame of
   * a block patch (sync protocol 3, only once `open` agreed on patches).
   */
  PATCH: 3,
} as const;

/** Bytes before a message's body: u32 body length, u8 kind. */
export const MESSAGE_HEADER_BYTES = 5;

/** One message: its kind and body. */
export interface Message {
  kind: number;
  /** The body; it may share memory with the received chunk (do not write to it). */
  body: Uint8Array;
}

/**
 * Reads length-prefixed messages from a byte stream, refusing any longer than
 * `maxBodyBytes` (the length comes from the peer: it is bounded before anything is
 * allocated). A message inside one received chunk is not copied.
 */
export class MessageReader {
  readonly #reader: ChunkReader;
  readonly #maxBody: number;

  constructor(readable: ReadableStream<Uint8Array>, maxBodyBytes: number) {
    this.#reader = new ChunkReader(readable.getReader(), new Uint8Array(0));
    this.#maxBody = maxBodyBytes;
  }

  /**
   * The next message, or null at a clean end of stream between messages.
   *
   * @throws {PresyncError} `PROTOCOL_VIOLATION` for a body over the limit; `CONNECTION_LOST`
   *   (retryable) when the stream ends inside a message; the stream's own error
   */
  async read(): Promise<Message | null> {
    const header = await this.#reader.read(MESSAGE_HEADER_BYTES);
    if (header === null) {
      if (this.#reader.buffered === 0) return null;
      throw truncated();
    }
    const length = new DataView(header.buffer, header.byteOffset).getUint32(0, true);
    const kind = header[4];
    if (length > this.#maxBody) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `sync message of ${length} bytes exceeds the limit of ${this.#maxBody}`,
      );
    }
    const body = length === 0 ? new Uint8Array(0) : await this.#reader.read(length);
    if (body === null) throw truncated();
    return { kind, body };
  }

  /** Stops reading. Never throws. */
  cancel(): Promise<void> {
    this.#reader.cancel();
    return Promise.resolve();
  }
}

function truncated(): PresyncError {
  return new PresyncError(
    ErrorCode.CONNECTION_LOST,
    "sync stream ended in the middle of a message",
    { retryable: true },
  );
}

/** Writes length-prefixed messages to a byte stream. Calls must not overlap. */
export class MessageWriter {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(writable: WritableStream<Uint8Array>) {
    this.#writer = writable.getWriter();
  }

  /** Writes one message; resolves when the stream has taken it (backpressure). */
  async write(kind: number, body: Uint8Array): Promise<void> {
    const message = new Uint8Array(MESSAGE_HEADER_BYTES + body.length);
    new DataView(message.buffer).setUint32(0, body.length, true);
    message[4] = kind;
    message.set(body, MESSAGE_HEADER_BYTES);
    await this.#writer.write(message);
  }

  /** Writes a JSON message. */
  writeJson(value: unknown): Promise<void> {
    return this.write(MessageKind.JSON, new TextEncoder().encode(JSON.stringify(value)));
  }

  /** Ends the stream. Never throws. */
  close(): Promise<void> {
    return this.#writer.close().catch(() => {});
  }
}

/**
 * Parses a JSON message body.
 *
 * @throws {PresyncError} `PROTOCOL_VIOLATION` when it is not UTF-8 JSON
 */
export function parseJsonBody(body: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (cause) {
    throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "sync message is not UTF-8 JSON", {
      cause,
    });
  }
}
