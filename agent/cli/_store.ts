import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { ReplicaStore } from "../store/replica_store.ts";

/**
 * The replica store a `--store` flag names. Today every value is a directory (the
 * `store-directory` back end); other back ends (issue 18: `rbd:POOL`) get their prefix here.
 */
export function storeFromFlag(store: string): ReplicaStore {
  return new ReplicaStore(new DirectoryBackend(new DenoFileSystem(), store));
}
