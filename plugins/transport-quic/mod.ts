/**
 * The `quic` transport plugin: sessions over QUIC (Deno's unstable QUIC API; run with
 * `--unstable-net`).
 *
 * Glossary:
 * - **QUIC connection**: TLS 1.3 and congestion control over UDP (quinn in Deno).
 * - **QUIC stream**: an ordered byte stream inside a connection. The session runs over one
 *   bidirectional QUIC stream as its byte channel; its own streams are **not** mapped onto
 *   QUIC streams. Why: the session layer (pre-shared-key handshake, priorities, windows,
 *   keepalive, GOAWAY, frame tags) then behaves identically on every transport and is tested
 *   once; Deno's QUIC API is unstable and offers only a `sendOrder` hint, not the strict
 *   control > on-demand > bulk scheduling and per-stream windows the session guarantees. The
 *   cost: head-of-line blocking across session streams when packets are lost (a loss stalls
 *   every stream for one retransmission), which native streams would avoid.
 * - **ALPN**: the protocol id `presync/1` both ends announce ({@linkcode QUIC_ALPN}).
 * - **CA file**: certificates the client trusts; the server presents a leaf issued by such a
 *   CA (rustls rejects a self-signed CA certificate used as the leaf: `CaUsedAsEndEntity`).
 *   Fingerprint pinning is not available over QUIC (no custom verifier in Deno's API).
 *
 * @example
 * ```ts ignore
 * import { quicTransport } from "./mod.ts";
 * const client = quicTransport({ caCerts: [await Deno.readTextFile("ca.pem")] });
 * ```
 *
 * @module
 */

export {
  QUIC_ALPN,
  quicAvailable,
  quicTransport,
  type QuicTransportOptions,
} from "./quic_transport.ts";
