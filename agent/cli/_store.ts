import { ErrorCode, PresyncError } from "../errors.ts";
import { storeBackendFromSpec, storeDirectory } from "../registry/mod.ts";
import { ReplicaStore } from "../store/replica_store.ts";

/** Flags that say where a store is and what it keeps (serve, export, volumes, delete…). */
export interface StoreFlags {
  /** `--store`: a directory, or `NAME:ARGUMENT` for a back end of the registry (`rbd:POOL`). */
  store: string;
  /** `--state DIR`: local files of a store that is not a directory (required for `rbd:`). */
  state?: string;
  /** `--keep N`: committed generations kept (RBD snapshots, directory undo logs). */
  keep?: string;
}

/**
 * The local directory for a store's own files (the TLS certificate of `serve` in
 * `<dir>/.tls/`, staging areas and locks of an RBD store): the store directory itself, or
 * `--state` for a store that has no directory (`rbd:`).
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` for such a store without `--state`
 */
export function localStateDir(flags: StoreFlags): string {
  const dir = storeDirectory(flags.store);
  if (dir !== undefined) return dir;
  if (flags.state === undefined || flags.state === "") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--store ${flags.store} keeps its staging areas, locks, export overlays and TLS ` +
        `certificate in a local directory: give --state DIR (e.g. --state /var/lib/presync/serve)`,
    );
  }
  return flags.state;
}

/**
 * The replica store a `--store` flag names: `DIR` (the `directory` back end) or
 * `NAME:ARGUMENT` for a back end of the registry (`agent/registry/store_plugins.ts`).
 *
 * @throws {PresyncError} `PLUGIN_UNKNOWN` (exit 2) for an unknown back-end name,
 *   `INVALID_ARGUMENT` for a bad argument, a missing `--state`, or a `--keep` the back end
 *   cannot keep
 */
export function storeFromFlag(flags: StoreFlags): ReplicaStore {
  return new ReplicaStore(
    storeBackendFromSpec(flags.store, {
      stateDir: flags.state,
      keep: flags.keep === undefined ? undefined : parseKeep(flags.keep),
    }),
  );
}

function parseKeep(text: string): number {
  const keep = /^[0-9]{1,6}$/.test(text) ? Number(text) : NaN;
  if (!(keep >= 1)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--keep must be a whole number of generations, at least 1: received ${JSON.stringify(text)}`,
    );
  }
  return keep;
}
