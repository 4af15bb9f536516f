import assert from "node:assert/strict";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { tcpTransport } from "../../plugins/transport-tcp/mod.ts";
import { Bitmap, blake3 } from "../core/mod.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { DestinationDaemon } from "./destination_daemon.ts";

Deno.test("status and volumes read the recorded state and change nothing, not even a pending replay", async () => {
  const fs = new PowerCutFileSystem();
  const store = new ReplicaStore(new DirectoryBackend(fs, "/store"));
  const replica = await store.init(newVolumeIdentity("db", 8 * 4096, 4096));
  using dirty = new Bitmap(8).set(2);
  await replica.beginGeneration(1, dirty, 1);
  const data = new Uint8Array(4096).fill(4);
  await replica.stage([{ block: 2, data, hash: blake3(data) }]);
  await replica.flush();
  replica.close();
  // A commit record left by a process that died before applying it: recovery would replay it.
  await store.backend.volume("db").staging.write(
    "commit",
    new TextEncoder().encode(
      JSON.stringify({ generation: 1, merkleRoot: "ab".repeat(32), cutTimeMs: 1 }),
    ),
  );
  const daemon = new DestinationDaemon({
    store,
    listen: { hostname: "127.0.0.1", port: 0 },
    transport: tcpTransport,
    psk: new Uint8Array(32),
    log: () => {},
  });
  const before = fs.mutations;
  const status = await daemon.status();
  assert.deepEqual(status.volumes.map((v) => [v.name, v.committedGeneration, v.sourceConnected]), [
    ["db", 0, false],
  ]);
  const { volumes } = await daemon.volumes();
  assert.equal(volumes[0].initialising, true);
  assert.equal(volumes[0].stagingGeneration, 1);
  assert.equal(fs.mutations, before, "status ran no recovery");
  // Opening does recover: the logged commit is replayed.
  const reopened = await store.open("db");
  assert.equal(reopened.meta.committedGeneration, 1);
  reopened.close();
});
