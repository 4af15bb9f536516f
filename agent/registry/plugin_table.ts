import { ErrorCode, PresyncError } from "../errors.ts";

/** What every plugin entry of a {@linkcode PluginTable} has. */
export interface PluginEntry {
  /** The name configuration uses, e.g. `scan`, `tls`, `zstd-native`. */
  readonly name: string;
  /** One line for `--help` and error messages: what the plugin does. */
  readonly summary: string;
}

/**
 * The plugins of one kind (trackers, transports…), looked up by the name configuration
 * gives. Names are unique; the first entry is the default unless another is named.
 *
 * @example
 * ```ts
 * import { PluginTable } from "./plugin_table.ts";
 * const table = new PluginTable("tracker", "--tracker", [
 *   { name: "scan", summary: "re-reads the image" },
 * ]);
 * console.assert(table.get("scan").summary === "re-reads the image");
 * ```
 */
export class PluginTable<T extends PluginEntry> {
  /** What kind of plugin this table holds, for messages: `tracker`, `transport`… */
  readonly kind: string;
  /** The flag that names one, for messages: `--tracker`. */
  readonly flag: string;
  readonly #entries: Map<string, T>;

  constructor(kind: string, flag: string, entries: readonly T[]) {
    this.kind = kind;
    this.flag = flag;
    this.#entries = new Map();
    for (const entry of entries) {
      if (this.#entries.has(entry.name)) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          `two ${kind} plugins are named "${entry.name}": plugin names must be unique`,
        );
      }
      this.#entries.set(entry.name, entry);
    }
  }

  /** The names, in registry order. */
  get names(): string[] {
    return [...this.#entries.keys()];
  }

  /** All entries, in registry order. */
  get entries(): T[] {
    return [...this.#entries.values()];
  }

  /** True when a plugin of that name exists. */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /**
   * The plugin named `name`.
   *
   * @throws {PresyncError} `PLUGIN_UNKNOWN` (exit 2) listing the known names
   */
  get(name: string): T {
    const entry = this.#entries.get(name);
    if (entry === undefined) {
      throw new PresyncError(
        ErrorCode.PLUGIN_UNKNOWN,
        `${this.flag} ${JSON.stringify(name)}: no such ${this.kind}; this build has ` +
          `${this.names.join(", ")}`,
      );
    }
    return entry;
  }

  /** `name|name|…`, for usage lines. */
  choices(): string {
    return this.names.join("|");
  }
}
