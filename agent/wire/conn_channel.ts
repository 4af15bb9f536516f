import type { ByteChannel } from "./transport.ts";

/**
 * Wraps a Deno connection (TCP, TLS, Unix) as a {@linkcode ByteChannel}: its Web Streams, its
 * peer address, and an idempotent `close()`.
 *
 * @example
 * ```ts ignore
 * const channel = connChannel(await Deno.connect({ hostname: "127.0.0.1", port: 4433 }));
 * ```
 */
export function connChannel(conn: Deno.Conn): ByteChannel {
  const addr = conn.remoteAddr as Deno.NetAddr;
  let closed = false;
  return {
    readable: conn.readable,
    writable: conn.writable,
    remote: addr.hostname !== undefined ? `${addr.hostname}:${addr.port}` : String(addr.transport),
    close: () => {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // Already closed by the stream machinery (end of input): nothing left to release.
      }
    },
  };
}
