import tls from "node:tls";
import { PresyncError } from "../../agent/errors.ts";
import { connChannel } from "../../agent/wire/conn_channel.ts";
import type { ByteChannel, TransportAddress } from "../../agent/wire/transport.ts";
import { connectError } from "../transport-tcp/mod.ts";
import { normalizeFingerprint } from "./certificate_fingerprint.ts";
import { SELF_SIGNED_NAME } from "./self_signed.ts";
import { socketChannel } from "./_socket_channel.ts";

/** Checks a server certificate's fingerprint: undefined accepts it, an error refuses it. */
export type FingerprintCheck = (fingerprint: string) => PresyncError | undefined;

/** A server certificate learned on a connection. */
export interface LearnedCertificate {
  /** SHA-256 fingerprint, lowercase hex. */
  fingerprint: string;
  /** The certificate, PEM. */
  pem: string;
  /** Whether it names {@linkcode SELF_SIGNED_NAME}, so Deno's TLS can pin it. */
  pinnable: boolean;
}

/** Closes a connection that may be missing or already closed. */
export function closeQuietly(conn: Deno.Conn | undefined): void {
  try {
    conn?.close();
  } catch { /* already closed */ }
}

function pemOf(der: Uint8Array): string {
  const base64 = btoa(String.fromCharCode(...der));
  return `-----BEGIN CERTIFICATE-----\n${base64.match(/.{1,64}/g)!.join("\n")}\n` +
    `-----END CERTIFICATE-----\n`;
}

/**
 * Connects with node:tls, which hands over the server's certificate whoever issued it, and
 * checks its fingerprint before any byte is sent.
 */
export function connectChecked(
  address: TransportAddress,
  serverName: string | undefined,
  check: FingerprintCheck,
  signal?: AbortSignal,
): Promise<{ channel: ByteChannel; certificate: LearnedCertificate }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: address.hostname,
      port: address.port,
      servername: serverName,
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
      const peer = socket.getPeerCertificate();
      const fingerprint = normalizeFingerprint(peer.fingerprint256 ?? "");
      const refusal = check(fingerprint);
      if (refusal) return settle(refusal);
      settle();
      socket.setNoDelay(true);
      resolve({
        channel: socketChannel(socket, `${address.hostname}:${address.port}`),
        certificate: {
          fingerprint,
          pem: pemOf(new Uint8Array(peer.raw)),
          pinnable: (peer.subjectaltname ?? "").split(", ").includes(`DNS:${SELF_SIGNED_NAME}`),
        },
      });
    });
  });
}

/**
 * Deno's own TLS (rustls) over TCP, trusting exactly `certificate`, which must name
 * {@linkcode SELF_SIGNED_NAME} (as the certificates `serve` makes do): rustls checks it as
 * its own trust anchor, so no other certificate passes. Rejects with the raw error, for the
 * caller to tell a certificate that cannot be pinned this way from a network failure.
 */
async function startTlsPinned(
  address: TransportAddress,
  certificate: LearnedCertificate,
  signal?: AbortSignal,
): Promise<ByteChannel> {
  const tcp = await Deno.connect({ hostname: address.hostname, port: address.port, signal });
  tcp.setNoDelay(true);
  let conn: Deno.TlsConn | undefined;
  const abort = () => closeQuietly(conn ?? tcp);
  signal?.addEventListener("abort", abort, { once: true });
  try {
    conn = await Deno.startTls(tcp, { hostname: SELF_SIGNED_NAME, caCerts: [certificate.pem] });
    if (signal?.aborted) throw signal.reason;
    await conn.handshake();
    return connChannel(conn);
  } catch (error) {
    closeQuietly(conn ?? tcp);
    throw error;
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

function isCertificateError(error: unknown): boolean {
  return /certificate|UnknownIssuer|BadSignature|NotValidForName|invalid peer/i.test(
    String(error),
  );
}

/**
 * Connects to a server trusted by its certificate's fingerprint (`check`), carrying the
 * session over Deno's own TLS where it can, which moves bulk data faster than node:tls. The
 * first connection to a server is node:tls, which shows the certificate whoever issued it:
 * when the certificate checks out and is one `serve` made (it names `presync`), that
 * connection is closed before a byte is sent, the certificate kept in `cache`, and the
 * session runs over Deno's TLS pinned to it, now and on every later connection. Any other
 * certificate (an operator's, pinned by fingerprint) keeps the node:tls connection. A server
 * whose certificate changed fails the pinned handshake and is checked again, so `check`
 * names the new fingerprint.
 */
export async function connectByFingerprint(
  address: TransportAddress,
  serverName: string | undefined,
  check: FingerprintCheck,
  cache: Map<string, LearnedCertificate>,
  signal?: AbortSignal,
): Promise<{ channel: ByteChannel; fingerprint: string }> {
  const server = `${address.hostname}:${address.port}`;
  const cached = cache.get(server);
  if (cached && !check(cached.fingerprint)) {
    try {
      const channel = await startTlsPinned(address, cached, signal);
      return { channel, fingerprint: cached.fingerprint };
    } catch (error) {
      if (!isCertificateError(error)) throw connectError(address, error);
      cache.delete(server); // the server's certificate changed: learn (and check) it again
    }
  }
  const first = await connectChecked(address, serverName, check, signal);
  const { certificate } = first;
  if (!certificate.pinnable) {
    return { channel: first.channel, fingerprint: certificate.fingerprint };
  }
  first.channel.close();
  try {
    const channel = await startTlsPinned(address, certificate, signal);
    cache.set(server, certificate);
    return { channel, fingerprint: certificate.fingerprint };
  } catch (error) {
    throw isCertificateError(error)
      ? connectError(address, new Error(`the pinned TLS handshake failed: ${error}`))
      : connectError(address, error);
  }
}
