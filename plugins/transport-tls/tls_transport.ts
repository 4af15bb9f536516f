import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { connChannel } from "../../agent/wire/conn_channel.ts";
import type { ByteChannel, Transport, TransportAddress } from "../../agent/wire/transport.ts";
import { connectError, wrapListener } from "../transport-tcp/mod.ts";
import { normalizeFingerprint } from "./certificate_fingerprint.ts";
import { closeQuietly, connectByFingerprint, type LearnedCertificate } from "./_pinned_connect.ts";
import type { PinStore } from "./known_servers.ts";

/** Options of {@linkcode tlsTransport}. A server needs `cert` and `key`; a client one trust. */
export interface TlsTransportOptions {
  /** Server: the certificate chain, PEM. */
  cert?: string;
  /** Server: the private key, PEM. */
  key?: string;
  /** Client: trust servers whose chain ends at one of these CA certificates (PEM). */
  caCerts?: string[];
  /**
   * Client: trust exactly the server certificate with this SHA-256 fingerprint (hex, colons
   * optional), whoever issued it; for self-signed certificates.
   */
  pinSha256?: string;
  /** Client: the name to check the certificate against (default: the host connected to). */
  serverName?: string;
  /** Client: time allowed for the TCP connect and the TLS handshake, in ms (default 10,000). */
  connectTimeoutMs?: number;
  /**
   * Client, when neither `caCerts` nor `pinSha256` is given: trust on first use. The first
   * server that also proves the pre-shared key gets its certificate pinned here; later
   * connections accept only that certificate (`PEER_UNTRUSTED` naming both fingerprints).
   */
  pinStore?: PinStore;
}

function untrusted(address: TransportAddress, why: string, cause?: unknown): PresyncError {
  return new PresyncError(
    ErrorCode.PEER_UNTRUSTED,
    `refusing ${address.hostname}:${address.port}: ${why}; check the server certificate ` +
      `and the pinned fingerprint or CA file`,
    { cause },
  );
}

async function connectPinned(
  address: TransportAddress,
  options: TlsTransportOptions,
  cache: Map<string, LearnedCertificate>,
  signal?: AbortSignal,
): Promise<ByteChannel> {
  const pin = normalizeFingerprint(options.pinSha256!);
  const check = (seen: string) =>
    seen === pin
      ? undefined
      : untrusted(address, `certificate fingerprint ${seen} is not the pinned ${pin}`);
  return (await connectByFingerprint(address, options.serverName, check, cache, signal)).channel;
}

/** Trust on first use: the pinned certificate if there is one, else any, pinned once the
 * session authenticated the server by the pre-shared key. */
async function connectTrustOnFirstUse(
  address: TransportAddress,
  options: TlsTransportOptions,
  store: PinStore,
  cache: Map<string, LearnedCertificate>,
  signal?: AbortSignal,
): Promise<ByteChannel> {
  const server = `${address.hostname}:${address.port}`;
  const pinned = await store.get(server);
  const check = (seen: string) =>
    pinned === undefined || seen === pinned ? undefined : new PresyncError(
      ErrorCode.PEER_UNTRUSTED,
      `server ${server} presented a TLS certificate with SHA-256 fingerprint ${seen}, but ` +
        `this agent pinned ${pinned} for it on first contact (in ${store.location}). If ` +
        `the destination's certificate was replaced on purpose (a new store or --tls-cert), ` +
        `remove the "${server}" entry from that file or start the agent with --tls-pin ` +
        `${seen}; otherwise someone may be intercepting the connection`,
    );
  const { channel, fingerprint } = await connectByFingerprint(
    address,
    options.serverName,
    check,
    cache,
    signal,
  );
  if (pinned !== undefined) return channel;
  return { ...channel, authenticated: () => store.pin(server, fingerprint) };
}

/**
 * TLS (Deno's rustls): encryption and server authentication below the session's own
 * pre-shared-key handshake. The client trusts the server by a CA file (`caCerts`), by the
 * pinned SHA-256 fingerprint of its certificate (`pinSha256`), or on first use (`pinStore`).
 *
 * @example
 * ```ts ignore
 * const server = tlsTransport({ cert, key }).listen({ hostname: "0.0.0.0", port: 4433 });
 * const client = tlsTransport({ pinSha256: "0eba…d4d7" });
 * const channel = await client.connect({ hostname: "dr-site", port: 4433 });
 * ```
 */
export function tlsTransport(options: TlsTransportOptions): Transport {
  const learned = new Map<string, LearnedCertificate>();
  return {
    name: "tls",
    async connect(address, callerSignal) {
      // A TLS handshake has no deadline of its own: a peer that stops answering would hold a
      // connect forever.
      const timeoutMs = options.connectTimeoutMs ?? 10_000;
      const deadline = AbortSignal.timeout(timeoutMs);
      const signal = callerSignal ? AbortSignal.any([callerSignal, deadline]) : deadline;
      try {
        return await connectWithin(address, signal);
      } catch (error) {
        if (!deadline.aborted || callerSignal?.aborted) throw error;
        throw new PresyncError(
          ErrorCode.TIMEOUT,
          `TLS connection to ${address.hostname}:${address.port} not set up within ` +
            `${timeoutMs} ms: the server or the link is not answering; retrying`,
          { cause: error, retryable: true },
        );
      }
    },
    listen(address) {
      if (!options.cert || !options.key) {
        throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "a TLS server needs cert and key (PEM)");
      }
      return wrapListener(
        // The TLS handshake runs on first read, so a slow client never blocks accept().
        Deno.listenTls({ ...address, cert: options.cert, key: options.key }),
      );
    },
  };

  async function connectWithin(
    address: TransportAddress,
    signal: AbortSignal,
  ): Promise<ByteChannel> {
    if (options.pinSha256) return connectPinned(address, options, learned, signal);
    if (!options.caCerts?.length) {
      if (options.pinStore) {
        return connectTrustOnFirstUse(address, options, options.pinStore, learned, signal);
      }
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        "a TLS client needs caCerts (a CA file), pinSha256 (a certificate fingerprint) or " +
          "a pinStore (trust on first use)",
      );
    }
    let conn: Deno.TlsConn | undefined;
    const abort = () => closeQuietly(conn);
    signal.addEventListener("abort", abort, { once: true });
    try {
      conn = await Deno.connectTls({
        hostname: address.hostname,
        port: address.port,
        caCerts: options.caCerts,
        serverName: options.serverName,
        signal,
      } as Deno.ConnectTlsOptions);
      if (signal.aborted) throw signal.reason;
      await conn.handshake();
    } catch (error) {
      closeQuietly(conn);
      const text = String(error);
      if (/certificate|UnknownIssuer|invalid peer/i.test(text)) {
        throw untrusted(
          address,
          `its certificate does not verify against the CA (${text})`,
          error,
        );
      }
      throw connectError(address, error);
    } finally {
      signal.removeEventListener("abort", abort);
    }
    return connChannel(conn);
  }
}
