import { ErrorCode, PresyncError } from "../errors.ts";

/** Most bytes of a tunnel header's JSON. */
export const MAX_HEADER_BYTES = 4096;

/**
 * Writes one header — a 2-byte big-endian length and that many bytes of JSON — on `writable`:
 * the source's `{volume}` opening a memory stream, the destination's `{ok}` or error reply.
 */
export async function writeTunnelHeader(
  writable: WritableStream<Uint8Array>,
  value: Record<string, unknown>,
): Promise<void> {
  const json = new TextEncoder().encode(JSON.stringify(value));
  if (json.length > MAX_HEADER_BYTES) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `tunnel header of ${json.length} bytes: expected at most ${MAX_HEADER_BYTES}`,
    );
  }
  const bytes = new Uint8Array(2 + json.length);
  new DataView(bytes.buffer).setUint16(0, json.length);
  bytes.set(json, 2);
  const writer = writable.getWriter();
  try {
    await writer.write(bytes);
  } finally {
    writer.releaseLock();
  }
}

/**
 * Reads one header from `readable`; returns it and the stream of the bytes after it (the
 * tunnel's records), nothing lost or read ahead of need.
 *
 * @throws {PresyncError} `FRAME_TOO_LARGE` for a length over {@linkcode MAX_HEADER_BYTES},
 *   `FRAME_MALFORMED` for a stream ending inside the header or JSON that is not an object
 */
export async function readTunnelHeader(
  readable: ReadableStream<Uint8Array>,
): Promise<{ header: Record<string, unknown>; rest: ReadableStream<Uint8Array> }> {
  const reader = readable.getReader();
  let buffered = new Uint8Array(0);
  const need = async (n: number) => {
    while (buffered.length < n) {
      const { value, done } = await reader.read();
      if (done) {
        throw new PresyncError(
          ErrorCode.FRAME_MALFORMED,
          `the memory stream ended inside its header (${buffered.length} of ${n} bytes)`,
        );
      }
      const joined = new Uint8Array(buffered.length + value.length);
      joined.set(buffered);
      joined.set(value, buffered.length);
      buffered = joined;
    }
  };
  let header: unknown;
  try {
    await need(2);
    const length = new DataView(buffered.buffer).getUint16(0);
    if (length > MAX_HEADER_BYTES) {
      throw new PresyncError(
        ErrorCode.FRAME_TOO_LARGE,
        `tunnel header of ${length} bytes: expected at most ${MAX_HEADER_BYTES}`,
      );
    }
    await need(2 + length);
    try {
      header = JSON.parse(new TextDecoder().decode(buffered.subarray(2, 2 + length)));
    } catch (err) {
      throw new PresyncError(ErrorCode.FRAME_MALFORMED, `tunnel header: ${err}`, { cause: err });
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new PresyncError(ErrorCode.FRAME_MALFORMED, "tunnel header: expected a JSON object");
    }
    buffered = buffered.slice(2 + length);
  } catch (err) {
    reader.cancel(err).catch(() => {});
    throw err;
  }
  let leftover: Uint8Array | null = buffered.length > 0 ? buffered : null;
  const rest = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (leftover) {
        controller.enqueue(leftover);
        leftover = null;
        return;
      }
      const { value, done } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return { header: header as Record<string, unknown>, rest };
}
