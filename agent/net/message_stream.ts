import { ErrorCode, PresyncError } from "../errors.ts";

/** Message kinds on a sync stream (docs/PROTOCOL.md, "Sync protocol"). */
export const MessageKind = {
  /** A JSON request or reply. */
  JSON: 1,
  /** One block: block number, hash and a block frame. */
  BLOCK: 2,
} as const;

/** Bytes before a message's body: u32 body length, u8 kind. */
export const MESSAGE_HEADER_BYTES = 5;

/** One message: its kind and body. */
export interface Message {
  kind: number;
  body: Uint8Array;
}

/**
 * Reads length-prefixed messages from a byte stream, refusing any longer than
 * `maxBodyBytes` (the length comes from the peer: it is bounded before anything is
 * allocated).
 */
export class MessageReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #maxBody: number;
  #buffer = new Uint8Array(0);

  constructor(readable: ReadableStream<Uint8Array>, maxBodyBytes: number) {
    this.#reader = readable.getReader();
    this.#maxBody = maxBodyBytes;
  }

  async #fill(bytes: number): Promise<boolean> {
    while (this.#buffer.length < bytes) {
      const { value, done } = await this.#reader.read();
      if (done) return false;
      const joined = new Uint8Array(this.#buffer.length + value.length);
      joined.set(this.#buffer);
      joined.set(value, this.#buffer.length);
      this.#buffer = joined;
    }
    return true;
  }

  /** The next message, or null at a clean end of stream between messages. */
  async read(): Promise<Message | null> {
    if (!(await this.#fill(MESSAGE_HEADER_BYTES))) {
      if (this.#buffer.length === 0) return null;
      throw truncated();
    }
    const view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset);
    const length = view.getUint32(0, true);
    const kind = this.#buffer[4];
    if (length > this.#maxBody) {
      throw new PresyncError(
        ErrorCode.PROTOCOL_VIOLATION,
        `sync message of ${length} bytes exceeds the limit of ${this.#maxBody}`,
      );
    }
    if (!(await this.#fill(MESSAGE_HEADER_BYTES + length))) throw truncated();
    const body = this.#buffer.slice(MESSAGE_HEADER_BYTES, MESSAGE_HEADER_BYTES + length);
    this.#buffer = this.#buffer.subarray(MESSAGE_HEADER_BYTES + length);
    return { kind, body };
  }

  /** Stops reading. */
  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
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

  /** Ends the stream. */
  close(): Promise<void> {
    return this.#writer.close().catch(() => {});
  }
}

/** Parses a JSON message body into an object, or throws PROTOCOL_VIOLATION. */
export function parseJsonBody(body: Uint8Array): Record<string, unknown> {
  try {
    const value = JSON.parse(new TextDecoder().decode(body));
    if (value && typeof value === "object" && !Array.isArray(value)) return value;
  } catch {
    // Reported below.
  }
  throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "sync message is not a JSON object");
}
