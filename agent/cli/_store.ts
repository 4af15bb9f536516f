import { storeBackendFromSpec } from "../registry/mod.ts";
import { ReplicaStore } from "../store/replica_store.ts";

/**
 * The replica store a `--store` flag names: `DIR` (the `directory` back end) or
 * `NAME:ARGUMENT` for a back end of the registry (`agent/registry/store_plugins.ts`).
 *
 * @throws {PresyncError} `PLUGIN_UNKNOWN` (exit 2) for an unknown back-end name
 */
export function storeFromFlag(store: string): ReplicaStore {
  return new ReplicaStore(storeBackendFromSpec(store));
}
