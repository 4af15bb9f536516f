/**
 * A source agent that dies mid-generation, for the crash tests: attaches a QEMU tracker to
 * the rig in `Deno.args[0]`, cuts one generation, records it when `Deno.args[1]` is
 * `record`, prints `CUT <generation> <extents as JSON>` and waits to be killed (SIGKILL:
 * no release, no close).
 *
 * @module
 */

import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { SourceState } from "../../agent/source/source_state.ts";
import { QemuTracker } from "./qemu_tracker.ts";

const [dir, mode] = Deno.args;
const state = await SourceState.open(new DenoFileSystem(), `${dir}/state`);
const tracker = await QemuTracker.open({
  qmpSocket: `${dir}/qmp-0.sock`,
  node: "disk0",
  identity: state.identity,
  manifest: state.manifest,
  recordedGeneration: state.pending?.generation ?? state.committedGeneration,
  stateDir: `${dir}/state`,
  workDir: `${dir}/work`,
});
const generation = tracker.nextGeneration;
const cut = await tracker.cut();
if (mode === "record") await state.recordCut(cut.dirty, Date.now());
console.log(`CUT ${generation} ${JSON.stringify([...cut.dirty.extents()])}`);
await new Promise(() => {});
