/**
 * The plugin registry: the one place that names every plugin presync has. The CLI, the
 * daemons and local sync ask it by name; nothing else imports a plugin to choose it.
 *
 * Glossary:
 * - **plugin**: one folder under `plugins/<kind>-<name>/` implementing a contract of
 *   `agent/contracts/` (tracker, transport, codec, replica back end).
 * - **kind**: trackers ({@linkcode TRACKERS}, `--tracker`), transports
 *   ({@linkcode TRANSPORTS}, `--transport`), codecs ({@linkcode CODECS}, `--codec`), store
 *   back ends ({@linkcode STORES}, `--store NAME:ARG`).
 * - **entry**: what the registry knows of a plugin: its name, a one-line summary, and how to
 *   build it from settings. Adding a plugin = its folder + one entry in its kind's table.
 * - **unknown name**: a `PLUGIN_UNKNOWN` error (exit 2) listing the names this build has.
 *
 * @example
 * ```ts
 * import { TRACKERS, TRANSPORTS } from "./mod.ts";
 * console.assert(TRACKERS.names.includes("qemu-bitmap"));
 * console.assert(TRANSPORTS.get("quic").name === "quic");
 * ```
 *
 * @module
 */

export { type PluginEntry, PluginTable } from "./plugin_table.ts";
export {
  DEFAULT_TRACKER,
  type TrackerOpenContext,
  type TrackerPlugin,
  TRACKERS,
  type TrackerSettings,
} from "./tracker_plugins.ts";
export {
  DEFAULT_TRANSPORT,
  KNOWN_SERVERS_FILE,
  SERVER_TLS_DIR,
  type TransportPlugin,
  TRANSPORTS,
  type TransportSettings,
} from "./transport_plugins.ts";
export { type CodecPlugin, CODECS } from "./codec_plugins.ts";
export {
  storeBackendFromSpec,
  storeDirectory,
  type StoreOpenOptions,
  type StorePlugin,
  STORES,
} from "./store_plugins.ts";
