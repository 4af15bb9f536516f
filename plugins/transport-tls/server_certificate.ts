import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { certificateFingerprint } from "./certificate_fingerprint.ts";
import { type CertificatePair, createSelfSignedCertificate } from "./self_signed.ts";

/** A server's certificate as `serve` uses it. */
export interface ServerCertificate extends CertificatePair {
  /** SHA-256 fingerprint of the certificate, lowercase hex: what clients pin. */
  fingerprint: string;
  /** Where the certificate is. */
  certPath: string;
  /** Where its key is (mode 0600). */
  keyPath: string;
  /** True when it was made just now (first start). */
  created: boolean;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Writes `text` to `path` through a temporary file in the same directory and a rename. */
async function replaceFile(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  // createNew: never follows a planted symlink or reuses someone else's file.
  await Deno.writeTextFile(temporary, text, { mode, createNew: true });
  await Deno.chmod(temporary, mode);
  await Deno.rename(temporary, path);
}

/**
 * The server certificate in `dir` (`cert.pem`, `key.pem`): loaded when both are there, else
 * made (self-signed, {@linkcode createSelfSignedCertificate}) and written, the key first and
 * with mode 0600, each through a rename so a crash never leaves half a file. `dir` is created
 * with mode 0700 when missing.
 *
 * @throws {PresyncError} `IO` naming the path when the files cannot be read or written
 */
export async function loadOrCreateServerCertificate(dir: string): Promise<ServerCertificate> {
  const certPath = `${dir}/cert.pem`;
  const keyPath = `${dir}/key.pem`;
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    let pair: CertificatePair;
    let created = false;
    if ((await exists(certPath)) && (await exists(keyPath))) {
      pair = {
        certPem: await Deno.readTextFile(certPath),
        keyPem: await Deno.readTextFile(keyPath),
      };
    } else {
      pair = await createSelfSignedCertificate();
      await replaceFile(keyPath, pair.keyPem, 0o600);
      await replaceFile(certPath, pair.certPem, 0o644);
      created = true;
    }
    const fingerprint = await certificateFingerprint(pair.certPem);
    return { ...pair, fingerprint, certPath, keyPath, created };
  } catch (cause) {
    if (cause instanceof PresyncError) throw cause;
    throw new PresyncError(
      ErrorCode.IO,
      `cannot load or create the TLS certificate in ${dir}: ${cause} (check that the ` +
        `directory is writable by this user, or pass --tls-cert and --tls-key)`,
      { cause },
    );
  }
}
