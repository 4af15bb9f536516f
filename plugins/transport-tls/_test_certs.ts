/** Test certificates made at run time with `openssl` (a CA, a server leaf, a self-signed one). */
export interface TestCerts {
  /** The CA certificate, PEM. */
  caPem: string;
  /** The server certificate issued by the CA (SAN 127.0.0.1, localhost), PEM. */
  certPem: string;
  /** Its key, PEM. */
  keyPem: string;
  /** A second, unrelated CA, PEM. */
  otherCaPem: string;
}

/** True when `openssl` can be run; tests that need certificates are skipped otherwise. */
export function hasOpenssl(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Makes a fresh CA, a server certificate it signs, and an unrelated CA, in a temp dir. */
export async function makeTestCerts(): Promise<TestCerts> {
  const dir = await Deno.makeTempDir({ prefix: "presync-certs-" });
  try {
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for (const name of ["ca", "other"]) {
      await openssl(dir, [
        "req",
        "-x509",
        ...ec,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.pem`,
        "-days",
        "2",
        "-subj",
        `/CN=presync test ${name}`,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
      ]);
    }
    await openssl(dir, [
      "req",
      ...ec,
      "-keyout",
      "key.pem",
      "-out",
      "leaf.csr",
      "-subj",
      "/CN=localhost",
    ]);
    await Deno.writeTextFile(
      `${dir}/ext.cnf`,
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    await openssl(dir, [
      "x509",
      "-req",
      "-in",
      "leaf.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "2",
      "-out",
      "cert.pem",
      "-extfile",
      "ext.cnf",
    ]);
    const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
    return {
      caPem: await read("ca.pem"),
      certPem: await read("cert.pem"),
      keyPem: await read("key.pem"),
      otherCaPem: await read("other.pem"),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
