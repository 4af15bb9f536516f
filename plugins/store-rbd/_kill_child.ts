/**
 * The process the RBD kill -9 tests kill: it opens (or creates) the replica `killed` in an
 * RBD store and commits generation after generation of a seeded source, forever. It prints
 * `ready` once the replica is open and `commit G` as each commit starts.
 *
 *     deno run -A plugins/store-rbd/_kill_child.ts CONF POOL STATE_DIR SEED KEEP
 *
 * @module
 */

import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import {
  KILL_BLOCK,
  KILL_SIZE,
  KILL_VOLUME,
  SeededSource,
  sendGeneration,
} from "../../fixtures/seeded_generations.ts";
import { RbdBackend } from "./rbd_backend.ts";

const [confPath, pool, stateDir, seedText, keepText] = Deno.args;
const backend = new RbdBackend({
  spec: { pool, confPath },
  stateDir,
  fs: new DenoFileSystem(),
  keep: Number(keepText),
});
const store = new ReplicaStore(backend);
const replica = await store.has(KILL_VOLUME)
  ? await store.open(KILL_VOLUME)
  : await store.init(newVolumeIdentity(KILL_VOLUME, KILL_SIZE, KILL_BLOCK));
const source = new SeededSource(Number(seedText));
console.log("ready");
for (let g = replica.meta.committedGeneration + 1;; g++) {
  await sendGeneration(replica, source, g, () => console.log(`commit ${g}`));
}
