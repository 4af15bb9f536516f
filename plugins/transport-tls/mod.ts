/**
 * The `tls` transport plugin: sessions over TLS (Deno's rustls).
 *
 * Glossary:
 * - **CA file**: certificates the client trusts as issuers of the server's certificate.
 * - **pin**: the SHA-256 fingerprint of the one server certificate the client accepts
 *   ({@linkcode certificateFingerprint}); the choice for self-signed certificates.
 * - **trust on first use** (TOFU): with no pin and no CA, the client accepts the first
 *   server certificate it sees, and pins it (in a {@linkcode PinStore}) once that server has
 *   proved the pre-shared key; like SSH's `known_hosts`.
 * - **self-signed certificate**: what `serve` makes on first start when given none
 *   ({@linkcode loadOrCreateServerCertificate}).
 * - TLS authenticates the server and encrypts; the session's pre-shared-key handshake still
 *   runs inside it and authenticates both sides.
 *
 * @example
 * ```ts ignore
 * import { tlsTransport } from "./mod.ts";
 * const transport = tlsTransport({ caCerts: [await Deno.readTextFile("ca.pem")] });
 * ```
 *
 * @module
 */

export { certificateFingerprint, normalizeFingerprint } from "./certificate_fingerprint.ts";
export { tlsTransport, type TlsTransportOptions } from "./tls_transport.ts";
export { KnownServersFile, type PinStore } from "./known_servers.ts";
export { pinnedServerName } from "./pinned_server_name.ts";
export { type CertificatePair, createSelfSignedCertificate } from "./self_signed.ts";
export { loadOrCreateServerCertificate, type ServerCertificate } from "./server_certificate.ts";
