import { ErrorCode, PresyncError } from "../errors.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { parseRbdStoreSpec, RBD_STORE_PREFIX, RbdBackend } from "../../plugins/store-rbd/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { ReplicaStore } from "../store/replica_store.ts";

/** Flags that say where a store is and what it keeps (serve, export, volumes, delete…). */
export interface StoreFlags {
  /** `--store`: a directory, or `rbd:POOL[?conf=PATH&id=CLIENT&keyring=PATH]`. */
  store: string;
  /** `--state DIR`: local files of a store that is not a directory (required for `rbd:`). */
  state?: string;
  /** `--keep N`: committed generations kept as snapshots (`rbd:` only). */
  keep?: string;
}

/** Whether a `--store` value names an RBD pool. */
export function isRbdStore(store: string): boolean {
  return store.startsWith(RBD_STORE_PREFIX);
}

/**
 * The local directory for a store's own files (the TLS certificate of `serve` in
 * `<dir>/.tls/`, staging areas and locks of an RBD store): the store directory itself, or
 * `--state` for an `rbd:` store, which has no directory.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` for an `rbd:` store without `--state`
 */
export function localStateDir(flags: StoreFlags): string {
  if (!isRbdStore(flags.store)) return flags.store;
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
 * The replica store a `--store` flag names: a directory (the `store-directory` back end) or
 * `rbd:POOL` (the `store-rbd` back end, with `--state DIR` for its local files).
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` for a bad `rbd:` value, a missing `--state`, or
 *   `--keep` on a directory store
 */
export function storeFromFlag(flags: StoreFlags): ReplicaStore {
  const { store, keep } = flags;
  if (!isRbdStore(store)) {
    if (keep !== undefined) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `--keep needs an rbd: store (snapshots); a directory store keeps the last committed ` +
          `generation only: drop --keep or use --store rbd:POOL`,
      );
    }
    return new ReplicaStore(new DirectoryBackend(new DenoFileSystem(), store));
  }
  return new ReplicaStore(
    new RbdBackend({
      spec: parseRbdStoreSpec(store),
      stateDir: localStateDir(flags),
      fs: new DenoFileSystem(),
      keep: keep === undefined ? undefined : parseKeep(keep),
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
