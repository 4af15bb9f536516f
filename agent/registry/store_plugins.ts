import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { parseRbdStoreSpec, RBD_STORE_PREFIX, RbdBackend } from "../../plugins/store-rbd/mod.ts";
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
   * @throws {PresyncError} `INVALID_ARGUMENT` for an argument the back end cannot take, or
   *   options it does not support
   */
  open(argument: string, options: StoreOpenOptions): ReplicaBackend;
}

/** What `--store` does not say: local files and retention. */
export interface StoreOpenOptions {
  /** `--state DIR`: the local directory of a back end that is not one (staging, locks). */
  stateDir?: string;
  /** `--keep N`: committed generations kept (RBD snapshots, directory undo logs). */
  keep?: number;
}

/** `NAME:ARGUMENT`: a back end by name. */
const NAMED = /^([a-z][a-z0-9-]*):(.*)$/s;

/** `directory`: one directory per volume under DIR (docs/STORE.md). */
const DIRECTORY: StorePlugin = {
  name: "directory",
  argument: "DIR",
  summary: "one subdirectory per volume under DIR",
  open(dir, options) {
    if (dir === "") {
      throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "--store directory: needs a DIR");
    }
    return new DirectoryBackend(new DenoFileSystem(), dir, { keep: options.keep });
  },
};

/** `rbd`: one RBD image per volume in a Ceph pool, a snapshot per committed generation. */
const RBD: StorePlugin = {
  name: "rbd",
  argument: "POOL[?conf=PATH&id=CLIENT&keyring=PATH]",
  summary: "Ceph RBD: image POOL/presync-VOL per volume, snapshot presync-gN per commit " +
    "(--state DIR for staging, locks and the TLS certificate; --keep N)",
  open(argument, options) {
    const spec = parseRbdStoreSpec(`${RBD_STORE_PREFIX}${argument}`);
    if (options.stateDir === undefined || options.stateDir === "") {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `--store rbd:${argument} keeps its staging areas, locks, export overlays and TLS ` +
          `certificate in a local directory: give --state DIR (e.g. --state /var/lib/presync/serve)`,
      );
    }
    return new RbdBackend({
      spec,
      stateDir: options.stateDir,
      fs: new DenoFileSystem(),
      keep: options.keep,
    });
  },
};

/**
 * Every replica back end this build has, by the prefix of `--store`. A new back end is a
 * folder `plugins/store-<name>/` and one entry here.
 */
export const STORES: PluginTable<StorePlugin> = new PluginTable("store back end", "--store", [
  DIRECTORY,
  RBD,
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
export function storeBackendFromSpec(
  spec: string,
  options: StoreOpenOptions = {},
): ReplicaBackend {
  const named = NAMED.exec(spec);
  if (named === null) return DIRECTORY.open(spec, options);
  return STORES.get(named[1]).open(named[2], options);
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
