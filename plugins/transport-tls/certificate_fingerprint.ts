/**
 * The SHA-256 fingerprint of a PEM certificate (of its DER bytes), as lowercase hex without
 * separators: what `openssl x509 -noout -fingerprint -sha256` prints, minus the colons.
 *
 * @example
 * ```ts ignore
 * const pin = await certificateFingerprint(await Deno.readTextFile("server.pem"));
 * ```
 */
export async function certificateFingerprint(pem: string): Promise<string> {
  const body = pem.match(/-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/);
  if (!body) throw new TypeError("expected a PEM certificate (-----BEGIN CERTIFICATE-----)");
  const der = Uint8Array.from(atob(body[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", der));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Normalizes a fingerprint written with or without colons, in any case. */
export function normalizeFingerprint(text: string): string {
  return text.replace(/[^0-9a-fA-F]/g, "").toLowerCase();
}
