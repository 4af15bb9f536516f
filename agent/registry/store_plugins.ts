import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { ReplicaBackend } from "../store/replica_backend.ts";
import { type PluginEntry, PluginTable } from "./plugin_table.ts";

/** A replica back-end plugin as the registry lists it: `--store NAME:ARGUMENT`. */
export interface StorePlugin extends PluginEntry {
  /** What follows `NAME:` in `--store`, for usage lines: `DIR`, `POOL`. */
  readonly argument: string;
  /**
   * The back end for `argument` (no I/O yet: the store opens it).
   *
   * @throws {PresyncError} `INVALID_ARGUMENT` for an argument the back end cannot take
   */
  open(argument: string): ReplicaBackend;
}

/** `NAME:ARGUMENT`: a back end by name. */
const NAMED = /^([a-z][a-z0-9-]*):(.*)$/s;

/** `directory`: one directory per volume under DIR (docs/STORE.md). */
const DIRECTORY: StorePlugin = {
  name: "directory",
  argument: "DIR",
  summary: "one subdirectory per volume under DIR",
  open(dir) {
    if (dir === "") {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "--store directory: needs a DIR");
    }
    return new DirectoryBackend(new DenoFileSystem(), dir);
  },
};

/**
 * Every replica back end this build has, by the prefix of `--store` (`rbd:POOL` joins from
 * `plugins/store-rbd`). A new back end is a folder `plugins/store-<name>/` and one entry here.
 */
export const STORES: PluginTable<StorePlugin> = new PluginTable("store back end", "--store", [
  DIRECTORY,
]);

/**
 * The back end a `--store` value names: `NAME:ARGUMENT` for a back end by name (a lowercase
 * word before the colon), anything else (`/srv/presync`, `./a:b`, `store`) a directory.
 *
 * @throws {PresyncError} `PLUGIN_UNKNOWN` (exit 2) listing the back ends for an unknown NAME
 *
 * @example
 * ```ts
 * import { storeBackendFromSpec } from "./store_plugins.ts";
 * console.assert(storeBackendFromSpec("/srv/presync").location.endsWith("/srv/presync"));
 * ```
 */
export function storeBackendFromSpec(spec: string): ReplicaBackend {
  const named = NAMED.exec(spec);
  if (named === null) return DIRECTORY.open(spec);
  return STORES.get(named[1]).open(named[2]);
}

/**
 * The directory a `--store` value names, or undefined for another back end (`rbd:POOL`):
 * where `serve` may keep files of its own, such as its TLS certificate.
 */
export function storeDirectory(spec: string): string | undefined {
  const named = NAMED.exec(spec);
  if (named === null) return spec;
  return named[1] === DIRECTORY.name ? named[2] : undefined;
}
