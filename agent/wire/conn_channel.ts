import { ErrorCode, PresyncError } from "../errors.ts";
import type { ByteChannel } from "./transport.ts";

/** First read size of a connection, in bytes: what an idle, unauthenticated peer costs. */
export const FIRST_READ_BYTES = 2048;
/** Largest read size, in bytes, reached by doubling while reads come back full. */
export const MAX_READ_BYTES = 65536;

/**
 * Wraps a Deno connection (TCP, TLS, Unix) as a {@linkcode ByteChannel}: its bytes, its peer
 * address, and an idempotent `close()`.
 *
 * Reads start small ({@linkcode FIRST_READ_BYTES}) and double each time a read fills its
 * buffer, up to {@linkcode MAX_READ_BYTES}: so a connection that sends nothing (an idle or
 * hostile peer before authentication) holds 2 KiB, not the 64 KiB a pending read of Deno's
 * own `conn.readable` allocates, while a busy one reaches full-size reads within a few.
 * A failed read errors the readable with a retryable `CONNECTION_LOST`. The streams are made
 * on first use, so a connection refused before its handshake costs none.
 *
 * @example
 * ```ts ignore
 * const channel = connChannel(await Deno.connect({ hostname: "127.0.0.1", port: 4433 }));
 * ```
 */
export function connChannel(conn: Deno.Conn): ByteChannel {
  const addr = conn.remoteAddr as Deno.NetAddr;
  const remote = addr.hostname !== undefined
    ? `${addr.hostname}:${addr.port}`
    : String(addr.transport);
  let closed = false;
  let readBytes = FIRST_READ_BYTES;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch {
      // Already closed by the stream machinery (end of input): nothing left to release.
    }
  };
  const makeReadable = () =>
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        const buffer = new Uint8Array(readBytes);
        let n: number | null;
        try {
          n = await conn.read(buffer);
        } catch (error) {
          controller.error(
            new PresyncError(
              ErrorCode.CONNECTION_LOST,
              closed
                ? `connection to ${remote} closed locally`
                : `connection to ${remote} failed: ${error}`,
              { cause: error, retryable: true },
            ),
          );
          return;
        }
        if (n === null) {
          controller.close();
          return;
        }
        if (n === readBytes) readBytes = Math.min(MAX_READ_BYTES, readBytes * 2);
        controller.enqueue(buffer.subarray(0, n));
      },
      cancel: close,
    }, { highWaterMark: 0 });
  // Made on first use: a connection refused before its handshake costs no streams.
  let readable: ReadableStream<Uint8Array> | undefined;
  return {
    get readable() {
      return readable ??= makeReadable();
    },
    get writable() {
      return conn.writable;
    },
    remote,
    close,
  };
}
