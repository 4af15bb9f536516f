import tls from "node:tls";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { connChannel } from "../../agent/wire/conn_channel.ts";
import type { ByteChannel, Transport, TransportAddress } from "../../agent/wire/transport.ts";
import { connectError, wrapListener } from "../transport-tcp/mod.ts";
import { normalizeFingerprint } from "./certificate_fingerprint.ts";
import { socketChannel } from "./_socket_channel.ts";
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

/**
 * Connects with node:tls, which hands over the server's certificate whoever issued it, and
 * checks its fingerprint with `check` (undefined = accept) before any byte is sent.
 */
function connectChecked(
  address: TransportAddress,
  options: TlsTransportOptions,
  check: (seen: string) => PresyncError | undefined,
  signal?: AbortSignal,
): Promise<{ channel: ByteChannel; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: address.hostname,
      port: address.port,
      servername: options.serverName,
      rejectUnauthorized: false, // checked below, against the pin, before any byte is sent
    });
    const abort = () => socket.destroy(new Error("connect aborted"));
    signal?.addEventListener("abort", abort, { once: true });
    const settle = (error?: PresyncError) => {
      signal?.removeEventListener("abort", abort);
      socket.off("error", onError);
      socket.off("close", onClose);
      if (error) {
        socket.on("error", () => {}); // a late error of the dropped socket is no news
        socket.destroy();
        reject(error);
      }
    };
    const onError = (error: Error) => settle(connectError(address, error));
    const onClose = () =>
      settle(connectError(address, new Error("closed during the TLS handshake")));
    socket.on("error", onError);
    socket.on("close", onClose);
    socket.once("secureConnect", () => {
      const fingerprint = normalizeFingerprint(socket.getPeerCertificate().fingerprint256 ?? "");
      const refusal = check(fingerprint);
      if (refusal) return settle(refusal);
      settle();
      socket.setNoDelay(true);
      resolve({
        channel: socketChannel(socket, `${address.hostname}:${address.port}`),
        fingerprint,
      });
    });
  });
}

async function connectPinned(
  address: TransportAddress,
  options: TlsTransportOptions,
  signal?: AbortSignal,
): Promise<ByteChannel> {
  const pin = normalizeFingerprint(options.pinSha256!);
  const check = (seen: string) =>
    seen === pin
      ? undefined
      : untrusted(address, `certificate fingerprint ${seen} is not the pinned ${pin}`);
  return (await connectChecked(address, options, check, signal)).channel;
}

/** Trust on first use: the pinned certificate if there is one, else any, pinned once the
 * session authenticated the server by the pre-shared key. */
async function connectTrustOnFirstUse(
  address: TransportAddress,
  options: TlsTransportOptions,
  store: PinStore,
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
  const { channel, fingerprint } = await connectChecked(address, options, check, signal);
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
  return {
    name: "tls",
    async connect(address, signal) {
      if (options.pinSha256) return connectPinned(address, options, signal);
      if (!options.caCerts?.length) {
        if (options.pinStore) {
          return connectTrustOnFirstUse(address, options, options.pinStore, signal);
        }
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          "a TLS client needs caCerts (a CA file), pinSha256 (a certificate fingerprint) or " +
            "a pinStore (trust on first use)",
        );
      }
      let conn: Deno.TlsConn;
      try {
        conn = await Deno.connectTls({
          hostname: address.hostname,
          port: address.port,
          caCerts: options.caCerts,
          serverName: options.serverName,
          signal,
        } as Deno.ConnectTlsOptions);
        await conn.handshake();
      } catch (error) {
        const text = String(error);
        if (/certificate|UnknownIssuer|invalid peer/i.test(text)) {
          throw untrusted(
            address,
            `its certificate does not verify against the CA (${text})`,
            error,
          );
        }
        throw connectError(address, error);
      }
      return connChannel(conn);
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
}
