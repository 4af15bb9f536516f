import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import {
  acceptUntilClosed,
  type ByteChannel,
  type Transport,
  type TransportAddress,
  type TransportListener,
} from "../../agent/wire/transport.ts";
import { connectError } from "../transport-tcp/mod.ts";

/** The ALPN protocol id presync announces over QUIC. */
export const QUIC_ALPN = "presync/1";

/** Options of {@linkcode quicTransport}. A server needs `cert` and `key`; a client `caCerts`. */
export interface QuicTransportOptions {
  /** Server: the certificate chain, PEM (a leaf issued by a CA; rustls refuses a CA as leaf). */
  cert?: string;
  /** Server: the private key, PEM. */
  key?: string;
  /** Client: trust servers whose chain ends at one of these CA certificates (PEM). */
  caCerts?: string[];
  /** Client: the name to check the certificate against (default: the host connected to). */
  serverName?: string;
  /** How long `close()` waits for the peer to read our last bytes, in ms (default 2,000). */
  lingerMs?: number;
  /** Server: ms a new connection may take to open its stream (default 10,000). */
  streamTimeoutMs?: number;
  /** QUIC congestion control (Deno: "throughput", "low-latency" or "default"). */
  congestionControl?: "throughput" | "low-latency" | "default";
}

/** True when this Deno runs with the unstable QUIC API (`--unstable-net`). */
export function quicAvailable(): boolean {
  try {
    new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

function unavailable(): PresyncError {
  return new PresyncError(
    ErrorCode.INVALID_ARGUMENT,
    "the quic transport needs Deno's unstable QUIC API: run with --unstable-net " +
      `(or "unstable": ["net"] in deno.json), or choose the tls transport`,
  );
}

/**
 * One QUIC bidirectional stream as a {@linkcode ByteChannel}. `close()` sends FIN, waits up to
 * `lingerMs` for the peer's FIN (so bytes written just before, such as a GOAWAY, are not lost
 * when the connection closes: QUIC's CONNECTION_CLOSE discards unsent stream data), then
 * closes the connection and `release`s what belongs to it.
 */
function streamChannel(
  conn: Deno.QuicConn,
  stream: Deno.QuicBidirectionalStream,
  remote: string,
  lingerMs: number,
  release: () => void,
): ByteChannel {
  const reader = stream.readable.getReader();
  const writer = stream.writable.getWriter();
  let closed = false;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const readable = new ReadableStream<Uint8Array>({
    start: (c) => {
      controller = c;
    },
    pull: async (c) => {
      try {
        const result = await reader.read();
        if (closed) return;
        if (result.done) c.close();
        else c.enqueue(result.value);
      } catch (error) {
        if (!closed) c.error(error);
      }
    },
    cancel: () => close(),
  }, { highWaterMark: 0 });
  const writable = new WritableStream<Uint8Array>({
    write: (chunk) => {
      if (closed) {
        throw new PresyncError(ErrorCode.CONNECTION_LOST, `QUIC stream to ${remote} closed`);
      }
      return writer.write(chunk);
    },
    abort: () => close(),
  });
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      controller.close();
    } catch { /* already closed or errored */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const linger = new Promise<void>((resolve) => (timer = setTimeout(resolve, lingerMs)));
    const drain = (async () => {
      await writer.close().catch(() => {});
      while (!(await reader.read()).done);
    })().catch(() => {});
    Promise.race([drain, linger]).finally(() => {
      clearTimeout(timer);
      try {
        conn.close({ closeCode: 0, reason: "closed" });
      } catch { /* already closed */ }
      release();
    });
  };
  return { readable, writable, remote, close };
}

function quicError(address: TransportAddress, error: unknown): PresyncError {
  const text = String(error);
  if (/certificate|UnknownIssuer|invalid peer|CaUsedAsEndEntity/i.test(text)) {
    return new PresyncError(
      ErrorCode.PEER_UNTRUSTED,
      `refusing ${address.hostname}:${address.port}: its certificate does not verify against ` +
        `the CA (${text}); check the server certificate and the CA file`,
      { cause: error },
    );
  }
  return connectError(address, error);
}

/**
 * QUIC (Deno's unstable QUIC API, quinn + rustls underneath): TLS 1.3 and congestion control
 * over UDP. A session runs over one bidirectional QUIC stream, like over a TCP connection;
 * its own streams are not mapped onto QUIC streams (see this plugin's `mod.ts`). The client
 * trusts the server by a CA file; pinning a fingerprint is not possible with Deno's QUIC
 * API. Needs `--unstable-net`.
 *
 * @example
 * ```ts ignore
 * const server = quicTransport({ cert, key }).listen({ hostname: "0.0.0.0", port: 4433 });
 * const client = quicTransport({ caCerts: [caPem] });
 * const session = await Session.connect(await client.connect({ hostname: "dr", port: 4433 }), { psk });
 * ```
 */
export function quicTransport(options: QuicTransportOptions): Transport {
  const lingerMs = options.lingerMs ?? 2000;
  return {
    name: "quic",
    async connect(address, signal) {
      if (!options.caCerts?.length) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          "a QUIC client needs caCerts (a CA file); fingerprint pinning is not available over QUIC",
        );
      }
      let endpoint: Deno.QuicEndpoint;
      try {
        endpoint = new Deno.QuicEndpoint({
          hostname: address.hostname.includes(":") ? "::" : "0.0.0.0",
          port: 0,
        });
      } catch {
        throw unavailable();
      }
      const abort = () => endpoint.close();
      signal?.addEventListener("abort", abort, { once: true });
      try {
        const conn = await Deno.connectQuic({
          hostname: address.hostname,
          port: address.port,
          caCerts: options.caCerts,
          serverName: options.serverName,
          alpnProtocols: [QUIC_ALPN],
          endpoint,
          congestionControl: options.congestionControl,
        });
        const stream = await conn.createBidirectionalStream();
        const remote = `${address.hostname}:${address.port}`;
        return streamChannel(conn, stream, remote, lingerMs, () => endpoint.close());
      } catch (error) {
        endpoint.close();
        throw quicError(address, error);
      } finally {
        signal?.removeEventListener("abort", abort);
      }
    },
    listen(address) {
      if (!options.cert || !options.key) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          "a QUIC server needs cert and key (PEM)",
        );
      }
      let endpoint: Deno.QuicEndpoint;
      try {
        endpoint = new Deno.QuicEndpoint({ hostname: address.hostname, port: address.port });
      } catch {
        throw unavailable();
      }
      const listener = endpoint.listen({
        cert: options.cert,
        key: options.key,
        alpnProtocols: [QUIC_ALPN],
        congestionControl: options.congestionControl,
      });
      return quicListener(endpoint, listener, lingerMs, options.streamTimeoutMs ?? 10000);
    },
  };
}

function quicListener(
  endpoint: Deno.QuicEndpoint,
  listener: Deno.QuicListener,
  lingerMs: number,
  streamTimeoutMs: number,
): TransportListener {
  const addr = endpoint.addr;
  const ready: ByteChannel[] = [];
  const waiting = new Set<() => void>();
  const pending = new Set<Deno.QuicConn>();
  let active = 0;
  let closed = false;
  let endpointClosed = false;
  const closeEndpoint = () => {
    if (endpointClosed) return;
    endpointClosed = true;
    endpoint.close();
  };
  const wake = () => {
    for (const w of [...waiting]) w();
    waiting.clear();
  };
  const release = () => {
    active--;
    if (closed && active === 0) closeEndpoint();
  };
  const admit = async (conn: Deno.QuicConn) => {
    pending.add(conn);
    const timer = setTimeout(
      () => conn.close({ closeCode: 1, reason: "no stream" }),
      streamTimeoutMs,
    );
    const streams = conn.incomingBidirectionalStreams.getReader();
    try {
      const { value: stream } = await streams.read();
      if (!stream || closed) throw new Error("closed before its first stream");
      streams.releaseLock();
      const remote = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
      active++;
      ready.push(streamChannel(conn, stream, remote, lingerMs, release));
      wake();
    } catch {
      try {
        conn.close({ closeCode: 1, reason: "no stream" });
      } catch { /* already closed */ }
    } finally {
      clearTimeout(timer);
      pending.delete(conn);
    }
  };
  (async () => {
    while (!closed) {
      let incoming: Deno.QuicIncoming;
      try {
        incoming = await listener.incoming();
      } catch {
        break; // stopped
      }
      // A client that fails its TLS handshake fails only its own accept.
      (incoming.accept() as Promise<Deno.QuicConn>).then(admit, () => {});
    }
  })();
  const accept = async (): Promise<ByteChannel> => {
    while (true) {
      const next = ready.shift();
      if (next) return next;
      if (closed) {
        throw new PresyncError(
          ErrorCode.SESSION_CLOSED,
          `the QUIC listener on ${addr.hostname}:${addr.port} is closed`,
        );
      }
      await new Promise<void>((resolve) => waiting.add(resolve));
    }
  };
  return {
    addr: { hostname: addr.hostname, port: addr.port },
    accept,
    close: () => {
      if (closed) return;
      closed = true;
      listener.stop();
      for (const conn of pending) conn.close({ closeCode: 1, reason: "listener closed" });
      for (const channel of ready.splice(0)) channel.close();
      if (active === 0) closeEndpoint();
      wake();
    },
    [Symbol.asyncIterator]: () => acceptUntilClosed(accept, () => closed),
  };
}
