import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { certificateFingerprint } from "./certificate_fingerprint.ts";
import { KnownServersFile } from "./known_servers.ts";
import { loadOrCreateServerCertificate } from "./server_certificate.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "presync-tls-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("server certificate: made once (key 0600, dir 0700), the same one on every later start", async () => {
  await withDir(async (root) => {
    const dir = `${root}/store/.tls`;
    const first = await loadOrCreateServerCertificate(dir);
    assert.equal(first.created, true);
    assert.equal((await Deno.stat(first.keyPath)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    assert.equal(first.fingerprint, await certificateFingerprint(first.certPem));
    const again = await loadOrCreateServerCertificate(dir);
    assert.equal(again.created, false);
    assert.equal(again.fingerprint, first.fingerprint);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["cert.pem", "key.pem"]);
  });
});

Deno.test("server certificate: a key left without its certificate (a crash) is replaced by a new pair", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/key.pem`, "half written");
    const made = await loadOrCreateServerCertificate(dir);
    assert.equal(made.created, true);
    assert.match(await Deno.readTextFile(`${dir}/key.pem`), /BEGIN PRIVATE KEY/);
  });
});

Deno.test("known servers: nothing before first contact, the pin after, one file at mode 0600", async () => {
  await withDir(async (dir) => {
    const known = new KnownServersFile(`${dir}/state/known_servers.json`);
    assert.equal(await known.get("dr:7700"), undefined);
    await known.pin("dr:7700", "AB:CD");
    await known.pin("other:7700", "ef");
    assert.equal(await known.get("dr:7700"), "abcd");
    assert.equal((await Deno.stat(known.location)).mode! & 0o777, 0o600);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(known.location)), {
      "dr:7700": "abcd",
      "other:7700": "ef",
    });
  });
});

Deno.test("known servers: a damaged file is STORE_CORRUPT naming the file and the fix", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/known_servers.json`, "[1, 2");
    const known = new KnownServersFile(`${dir}/known_servers.json`);
    const error = await assertRejectsCode(known.get("dr:7700"), "STORE_CORRUPT");
    assert.match(error.message, /known_servers\.json .*fix or delete it/);
  });
});
