import { SELF_SIGNED_NAME } from "./self_signed.ts";

/**
 * The name to check a server against when a client trusts `pem` as its "CA" file: for a
 * certificate `serve` made (self-signed, not a CA, named {@linkcode SELF_SIGNED_NAME}) that
 * name, since the certificate is then its own trust anchor whatever address the client
 * connects to; for anything else (a real CA) undefined, so the host connected to is checked.
 * Lets a QUIC client, which cannot pin a fingerprint, trust a copy of serve's certificate.
 *
 * @example
 * ```ts ignore
 * const serverName = await pinnedServerName(await Deno.readTextFile("cert.pem"));
 * ```
 */
export async function pinnedServerName(pem: string): Promise<string | undefined> {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----/g) ?? [];
  if (blocks.length !== 1) return undefined;
  const { x509 } = await import("./_x509.ts");
  let cert;
  try {
    cert = new x509.X509Certificate(pem);
  } catch {
    return undefined; // not a certificate: the TLS library reports it
  }
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (basic?.ca) return undefined;
  const names = cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  const selfSigned = cert.subject === cert.issuer;
  return selfSigned && names.some((n) => n.type === "dns" && n.value === SELF_SIGNED_NAME)
    ? SELF_SIGNED_NAME
    : undefined;
}
