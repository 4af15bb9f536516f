import { DirectoryBackend } from "../store-directory/mod.ts";
/**
 * A rig for the QEMU tracker's tests: a QEMU without a guest whose drive `drive0` (node
 * `disk0`) is a raw or qcow2 image, a second QMP monitor through which the test writes
 * (`qemu-io` over `human-monitor-command`, as a guest would, through the drive), the source
 * state and a local replica to sync into.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { QmpClient } from "../../agent/qemu/mod.ts";
import { SourceState } from "../../agent/source/source_state.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import type { ReplicaVolume } from "../../agent/store/replica_volume.ts";
import { sendGeneration } from "../../agent/sync/send_generation.ts";
import type { Cut } from "../../agent/tracker.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { type QemuProcess, startQemu } from "../../fixtures/guest/qemu_process.ts";
import { runTool } from "../../fixtures/nbd_tools.ts";
import { QemuTracker, type QemuTrackerOptions } from "./mod.ts";

export const SIZE = 16 * 1024 * 1024;
export const BLOCK = 64 * 1024;
export const VOLUME = "vm";

/** The rig; dispose it with `await using`. */
export class TrackerRig implements AsyncDisposable {
  readonly dir: string;
  readonly format: "raw" | "qcow2";
  readonly image: string;
  readonly fs = new DenoFileSystem();
  vm!: QemuProcess;
  writer!: QmpClient;
  state!: SourceState;
  replica!: ReplicaVolume;
  readonly #trackers: QemuTracker[] = [];

  private constructor(dir: string, format: "raw" | "qcow2") {
    this.dir = dir;
    this.format = format;
    this.image = `${dir}/disk.${format}`;
  }

  /** A fresh all-zero image in a running QEMU, an empty state and replica. */
  static async start(format: "raw" | "qcow2"): Promise<TrackerRig> {
    const rig = new TrackerRig(await Deno.makeTempDir({ prefix: "presync-qemu-tracker-" }), format);
    try {
      await runTool("qemu-img", ["create", "-q", "-f", format, rig.image, String(SIZE)]);
      await Deno.mkdir(`${rig.dir}/work`);
      const identity = newVolumeIdentity(VOLUME, SIZE, BLOCK);
      rig.state = await SourceState.init(rig.fs, `${rig.dir}/state`, identity);
      rig.replica = await new ReplicaStore(new DirectoryBackend(rig.fs, `${rig.dir}/store`)).init(
        identity,
      );
      await rig.startQemu();
    } catch (err) {
      await rig[Symbol.asyncDispose]();
      throw err;
    }
    return rig;
  }

  /** Starts QEMU on the image (after a `stopQemu`). */
  async startQemu(): Promise<void> {
    for (const socket of ["qmp-0.sock", "qmp-1.sock"]) {
      await Deno.remove(`${this.dir}/${socket}`).catch(() => {});
    }
    this.vm = await startQemu({
      dir: this.dir,
      qmpMonitors: 2,
      args: [
        "-machine",
        "none",
        "-display",
        "none",
        "-drive",
        `if=none,id=drive0,node-name=disk0,file=${this.image},format=${this.format}`,
      ],
    });
    this.writer = await QmpClient.connect(this.vm.qmp[1]);
  }

  /** Ends QEMU: `quit` (clean: persistent bitmaps are stored) or SIGKILL. */
  async stopQemu(how: "quit" | "kill"): Promise<void> {
    if (how === "quit") {
      await this.writer.execute("quit").catch(() => {});
      await this.vm.status;
    } else await this.vm.kill("SIGKILL");
    await this.writer.close();
  }

  /** Reopens the source state from disk (after another process changed it). */
  async reopenState(): Promise<void> {
    this.state.close();
    this.state = await SourceState.open(this.fs, `${this.dir}/state`);
  }

  /**
   * Runs `_crash_child.ts`: an agent that cuts one generation (recording it with `record`)
   * and is then killed with SIGKILL. Returns the generation and its extents.
   */
  async crashAfterCut(
    mode: "record" | "no-record",
  ): Promise<{ generation: number; extents: number[][] }> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./_crash_child.ts", import.meta.url).pathname, this.dir, mode],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const errors = new Response(child.stderr).text();
    let output = "";
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      while (!output.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        output += value;
      }
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Ended already.
      }
      await reader.cancel();
      await child.status;
    }
    if (!output.startsWith("CUT ")) {
      throw new Error(`the crash child failed: ${output}${await errors}`);
    }
    await errors;
    const [, generation, extents] = /^CUT (\d+) (.*)$/m.exec(output)!;
    return { generation: Number(generation), extents: JSON.parse(extents) };
  }

  /** The tracker's options for this rig. */
  options(extra: Partial<QemuTrackerOptions> = {}): QemuTrackerOptions {
    return {
      qmpSocket: this.vm.qmp[0],
      node: "disk0",
      identity: this.state.identity,
      manifest: this.state.manifest,
      recordedGeneration: this.state.pending?.generation ?? this.state.committedGeneration,
      stateDir: `${this.dir}/state`,
      workDir: `${this.dir}/work`,
      ...extra,
    };
  }

  /** Opens a tracker, closed with the rig. */
  async open(extra: Partial<QemuTrackerOptions> = {}): Promise<QemuTracker> {
    const tracker = await QemuTracker.open(this.options(extra));
    this.#trackers.push(tracker);
    return tracker;
  }

  /** Writes `lengthBytes` of `pattern` at block `block`, through the drive, as a guest would. */
  async write(block: number, pattern: number, lengthBytes = BLOCK): Promise<void> {
    const out = await this.writer.execute("human-monitor-command", {
      "command-line": `qemu-io drive0 "write -P 0x${pattern.toString(16)} ${
        block * BLOCK
      } ${lengthBytes}"`,
    });
    // qemu-io prints its progress on QEMU's stdout; the monitor only gets errors.
    assert.equal(out, "", `qemu-io write at block ${block} failed: ${out}`);
  }

  /** Cuts, records, sends and commits one generation; returns the sent blocks' extents. */
  async sync(tracker: QemuTracker, afterCut?: (cut: Cut) => Promise<void>) {
    const cut = await tracker.cut();
    try {
      await this.state.recordCut(cut.dirty, Date.now());
      await afterCut?.(cut);
      const report = await sendGeneration(this.state, cut, this.replica);
      const sent = [...report.sent.extents()];
      report.sent.free();
      return sent;
    } finally {
      await cut.release();
    }
  }

  /** Makes QEMU write out its caches (qcow2 metadata) so the image file is current. */
  async flush(): Promise<void> {
    const out = await this.writer.execute("human-monitor-command", {
      "command-line": 'qemu-io drive0 "flush"',
    });
    assert.equal(out, "", `qemu-io flush failed: ${out}`);
  }

  /** Copies the disk as it is now into the raw file `path`. */
  async snapshot(path: string): Promise<void> {
    await this.flush();
    await runTool("qemu-img", ["convert", "-U", "-f", this.format, "-O", "raw", this.image, path]);
  }

  /** Asserts that the replica equals the raw `image` (default: the source disk now). */
  async assertReplicaEquals(image?: string): Promise<void> {
    if (!image) {
      image = `${this.dir}/now.img`;
      await this.snapshot(image);
    }
    const out = await runTool("qemu-img", [
      "compare",
      "-U",
      "-f",
      "raw",
      "-F",
      "raw",
      image,
      `${this.dir}/store/${VOLUME}/image`,
    ], -1);
    assert.equal(out.code, 0, `replica differs from ${image}: ${out.stdout}${out.stderr}`);
  }

  /** Names of the dirty bitmaps on the node, and what presync left in QEMU and workDir. */
  async leftovers(): Promise<
    { bitmaps: string[]; exports: string[]; jobs: string[]; nodes: string[]; files: string[] }
  > {
    const nodes = await this.writer.execute("query-named-block-nodes", { flat: true }) as {
      "node-name": string;
      "dirty-bitmaps"?: { name?: string }[];
    }[];
    const disk = nodes.find((n) => n["node-name"] === "disk0");
    const files: string[] = [];
    for await (const entry of Deno.readDir(`${this.dir}/work`)) files.push(entry.name);
    return {
      bitmaps: (disk?.["dirty-bitmaps"] ?? []).flatMap((b) => b.name ? [b.name] : []).sort(),
      exports: (await this.writer.execute("query-block-exports") as { id: string }[]).map((e) =>
        e.id
      ),
      jobs: (await this.writer.execute("query-jobs") as { id: string }[]).map((j) => j.id),
      nodes: nodes.map((n) => n["node-name"]).filter((n) => n.startsWith("presync-")),
      files: files.filter((f) => f !== "nbd.sock"),
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const tracker of this.#trackers) await tracker.close().catch(() => {});
    await this.writer?.close();
    await this.vm?.kill();
    this.replica?.close();
    this.state?.close();
    await Deno.remove(this.dir, { recursive: true });
  }
}
