import assert from "node:assert/strict";
import { assertRejectsCode, assertThrowsCode } from "../../fixtures/assert.ts";
import { createSelfSignedCertificate, pinnedServerName } from "../../plugins/transport-tls/mod.ts";
import { hasOpenssl, makeTestCerts } from "../../fixtures/test_certs.ts";
import {
  CODECS,
  PluginTable,
  storeBackendFromSpec,
  storeDirectory,
  STORES,
  TRACKERS,
  TRANSPORTS,
} from "./mod.ts";

Deno.test("every plugin kind names its plugins; an unknown name is PLUGIN_UNKNOWN listing them", () => {
  assert.deepEqual(TRACKERS.names, ["scan", "nbd", "qemu-bitmap", "qemu"]);
  assert.deepEqual(TRANSPORTS.names, ["tls", "tcp", "quic"]);
  assert.deepEqual(CODECS.names, ["zstd-native", "zstd-wasm", "none"]);
  assert.deepEqual(STORES.names, ["directory", "rbd"]);
  for (const table of [TRACKERS, TRANSPORTS, CODECS, STORES]) {
    for (const entry of table.entries) assert.ok(entry.summary.length > 10, entry.name);
    const error = assertThrowsCode(() => table.get("nope"), "PLUGIN_UNKNOWN");
    assert.match(error.message, new RegExp(`^${table.flag} "nope": no such ${table.kind}`));
    assert.ok(error.message.endsWith(table.names.join(", ")), error.message);
  }
});

Deno.test("a table refuses two plugins of one name", () => {
  const entry = { name: "scan", summary: "one" };
  assertThrowsCode(
    () => new PluginTable("tracker", "--tracker", [entry, { ...entry }]),
    "INVALID_ARGUMENT",
  );
});

Deno.test("the codec entries build the codecs of agent/codec/codec_registry.ts", async () => {
  for (const entry of CODECS.entries) assert.equal((await entry.open()).name, entry.name);
});

Deno.test("--store: a directory unless NAME: names a back end; an unknown NAME is refused", () => {
  assert.equal(storeBackendFromSpec("/srv/presync").location, "/srv/presync");
  assert.equal(storeBackendFromSpec("./a:b").location, "./a:b");
  assert.equal(storeBackendFromSpec("directory:/srv/x").location, "/srv/x");
  const error = assertThrowsCode(() => storeBackendFromSpec("rbdx:pool"), "PLUGIN_UNKNOWN");
  assert.match(error.message, /--store "rbdx": no such store back end; this build has directory/);
  assertThrowsCode(() => storeBackendFromSpec("directory:"), "INVALID_ARGUMENT");
  assert.equal(storeDirectory("/srv/presync"), "/srv/presync");
  assert.equal(storeDirectory("directory:/srv/x"), "/srv/x");
  assert.equal(storeDirectory("rbd:pool"), undefined);
});

Deno.test("serve on a store that is not a directory needs --tls-cert: it has nowhere to make one", async () => {
  for (const name of ["tls", "quic"]) {
    const error = await assertRejectsCode(
      TRANSPORTS.get(name).server({ log: () => {} }),
      "INVALID_ARGUMENT",
    );
    assert.match(error.message, /give --tls-cert FILE and --tls-key FILE/);
  }
});

Deno.test("trackers check their flags before anything starts", () => {
  TRACKERS.get("scan").check({}, 3);
  const nbd = { transport: "unix" as const, path: "/run/x.sock" };
  TRACKERS.get("nbd").check({ nbdListen: nbd }, 1);
  assertThrowsCode(() => TRACKERS.get("nbd").check({ nbdListen: nbd }, 2), "INVALID_ARGUMENT");
  assertThrowsCode(() => TRACKERS.get("nbd").check({}, 1), "INVALID_ARGUMENT");
  const bitmap = TRACKERS.get("qemu-bitmap");
  bitmap.check({ nbdConnect: nbd, bitmap: "presync-1" }, 1);
  assertThrowsCode(() => bitmap.check({ nbdConnect: nbd }, 1), "INVALID_ARGUMENT");
  assertThrowsCode(() => bitmap.check({ bitmap: "presync-1" }, 1), "INVALID_ARGUMENT");
});

Deno.test("a QUIC agent needs a CA file: a pin or trust on first use is refused", async () => {
  const quic = TRANSPORTS.get("quic");
  const log = () => {};
  await assertRejectsCode(quic.client({ log, stateDir: "/nonexistent" }), "INVALID_ARGUMENT");
  const pinned = await assertRejectsCode(
    quic.client({ log, pinSha256: "ab".repeat(32) }),
    "INVALID_ARGUMENT",
  );
  assert.match(pinned.message, /--tls-pin is not possible over QUIC/);
});

Deno.test("pinnedServerName: serve's self-signed certificate is its own anchor, a CA is not", async () => {
  const own = await createSelfSignedCertificate();
  assert.equal(await pinnedServerName(own.certPem), "presync");
  assert.equal(await pinnedServerName(own.certPem + own.certPem), undefined);
  assert.equal(await pinnedServerName("not a certificate"), undefined);
  if (hasOpenssl()) {
    const certs = await makeTestCerts();
    assert.equal(await pinnedServerName(certs.caPem), undefined);
    assert.equal(await pinnedServerName(certs.certPem), undefined);
  }
});
