import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { connChannel } from "../../agent/wire/conn_channel.ts";
import {
  acceptUntilClosed,
  type ByteChannel,
  type Transport,
  type TransportAddress,
  type TransportListener,
} from "../../agent/wire/transport.ts";

/** Wraps a Deno listener (TCP or TLS) as a {@linkcode TransportListener}. */
export function wrapListener(
  listener: Deno.Listener,
  prepare: (conn: Deno.Conn) => Promise<ByteChannel> = (conn) => Promise.resolve(connChannel(conn)),
): TransportListener {
  const addr = listener.addr as Deno.NetAddr;
  let closed = false;
  const accept = async (): Promise<ByteChannel> => {
    const conn = await listener.accept();
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    return prepare(conn);
  };
  return {
    addr: { hostname: addr.hostname, port: addr.port },
    accept,
    close: () => {
      if (closed) return;
      closed = true;
      listener.close();
    },
    [Symbol.asyncIterator]: () => acceptUntilClosed(accept, () => closed),
  };
}

/** Maps a failed connect to a retryable `CONNECTION_LOST` naming the address. */
export function connectError(address: TransportAddress, error: unknown): PresyncError {
  if (error instanceof PresyncError) return error;
  return new PresyncError(
    ErrorCode.CONNECTION_LOST,
    `cannot connect to ${address.hostname}:${address.port}: ${error}`,
    { cause: error, retryable: true },
  );
}

/**
 * Plain TCP. Frames carry their own keyed integrity tags, so corruption is caught even here;
 * the traffic is not encrypted (use `tls` across an untrusted network).
 *
 * @example
 * ```ts ignore
 * const listener = tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
 * const channel = await tcpTransport.connect(listener.addr);
 * ```
 */
export const tcpTransport: Transport = {
  name: "tcp",
  async connect(address, signal) {
    try {
      const conn = await Deno.connect({ hostname: address.hostname, port: address.port, signal });
      conn.setNoDelay(true);
      return connChannel(conn);
    } catch (error) {
      throw connectError(address, error);
    }
  },
  listen(address) {
    return wrapListener(Deno.listen({ hostname: address.hostname, port: address.port }));
  },
};
