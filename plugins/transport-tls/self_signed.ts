/** A certificate and its private key, both PEM. */
export interface CertificatePair {
  /** The certificate, PEM. */
  certPem: string;
  /** Its private key (PKCS #8), PEM. */
  keyPem: string;
}

/**
 * The DNS name every certificate `serve` makes carries: a client that pins one checks it
 * against this name, whatever address it connected to.
 */
export const SELF_SIGNED_NAME = "presync";

/** Years a self-signed server certificate is valid; peers pin it, so it need not expire soon. */
const VALID_YEARS = 20;
/** id-kp-serverAuth (RFC 5280, section 4.2.1.12). */
const SERVER_AUTH_OID = "1.3.6.1.5.5.7.3.1";

function pem(label: string, der: ArrayBuffer): string {
  const base64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN ${label}-----\n${
    base64.match(/.{1,64}/g)!.join("\n")
  }\n-----END ${label}-----\n`;
}

/**
 * Makes a self-signed TLS server certificate: a fresh ECDSA P-256 key (WebCrypto), signed
 * with SHA-256, subject `CN=<commonName>`, a random serial, valid from an hour ago for 20
 * years, for server authentication only (not a CA). Clients trust it by its fingerprint
 * (pinned on first contact or given with `--tls-pin`), not by its name.
 *
 * @example
 * ```ts ignore
 * const { certPem, keyPem } = await createSelfSignedCertificate("presync dr-site");
 * ```
 */
export async function createSelfSignedCertificate(
  commonName = "presync",
): Promise<CertificatePair> {
  const { x509 } = await import("./_x509.ts");
  x509.cryptoProvider.set(crypto);
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const serial = Array.from(
    crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    // A positive serial: the top bit clear (RFC 5280 serials are non-negative integers).
    serialNumber: `7${serial.slice(1)}`,
    name: `CN=${commonName.replace(/[,=+<>#;"\\]/g, "_")}`,
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + VALID_YEARS * 365.25 * 86400_000),
    signingAlgorithm: algorithm,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([SERVER_AUTH_OID]),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: SELF_SIGNED_NAME }]),
    ],
  });
  return {
    certPem: cert.toString("pem") + "\n",
    keyPem: pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
  };
}
