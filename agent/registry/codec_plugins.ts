import { type Codec, CODEC_NAMES, codecByName, type CodecName } from "../codec/mod.ts";
import { type PluginEntry, PluginTable } from "./plugin_table.ts";

/** A codec plugin as the registry lists it; the codecs themselves are in `agent/codec/`. */
export interface CodecPlugin extends PluginEntry {
  /** The codec (`zstd-wasm` loads its WebAssembly module on first use). */
  open(): Promise<Codec>;
}

const SUMMARIES: Record<CodecName, string> = {
  "zstd-native":
    "zstd level 1 through node:zlib (the default: about half the CPU per byte of zstd-wasm)",
  "zstd-wasm": "zstd level 1 in WebAssembly (@bokuweb/zstd-wasm)",
  none: "no compression; zero blocks still travel as markers",
};

/**
 * Every codec this build has, by `--codec` name: the names and constructors of
 * `agent/codec/codec_registry.ts` (which the wire side uses to decode by algorithm id), listed
 * here beside the other plugin kinds. A new codec is a folder `plugins/codec-<name>/` and one
 * case in `codec_registry.ts`.
 */
export const CODECS: PluginTable<CodecPlugin> = new PluginTable(
  "codec",
  "--codec",
  CODEC_NAMES.map((name) => ({ name, summary: SUMMARIES[name], open: () => codecByName(name) })),
);
