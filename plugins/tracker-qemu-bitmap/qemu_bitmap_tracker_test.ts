import assert from "node:assert/strict";
import { Bitmap } from "../../agent/core/mod.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { SourceState } from "../../agent/source/source_state.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import { DirectoryBackend } from "../store-directory/mod.ts";
import { sendGeneration } from "../../agent/sync/send_generation.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needTools, runTool, startQemuNbd } from "../../fixtures/nbd_tools.ts";
import { markDirtyExtents, QemuBitmapTracker } from "./mod.ts";

const SIZE = 16 * 1024 * 1024;
const BLOCK = 64 * 1024;

Deno.test("markDirtyExtents maps QEMU extents of any granularity onto our blocks", () => {
  using dirty = new Bitmap(10);
  const end = markDirtyExtents(
    dirty,
    0,
    [
      { lengthBytes: 4096, flags: 0 },
      { lengthBytes: 4096, flags: 1 }, // inside block 0
      { lengthBytes: 3 * 4096 + 65536, flags: 0 },
      { lengthBytes: 65536 + 1, flags: 1 }, // blocks 1 (tail) .. 2 (one byte)
    ],
    16384,
    10 * 16384,
  );
  assert.equal(end, 4096 * 5 + 65536 * 2 + 1);
  assert.deepEqual([...dirty.extents()], [[0, 1], [5, 5]]);
});

const tools = await needTools(["qemu-img", "qemu-io", "qemu-nbd"]);

Deno.test({
  name: "qemu-bitmap tracker against qemu-nbd --bitmap syncs only the blocks qemu-io wrote",
  ...tools,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-qemu-bitmap-" });
    const fs = new DenoFileSystem();
    try {
      const disk = `${dir}/disk.qcow2`;
      await runTool("qemu-img", ["create", "-q", "-f", "qcow2", disk, String(SIZE)]);
      await runTool("qemu-img", ["bitmap", "--add", disk, "presync-1"]);
      await runTool("qemu-io", [
        "-f",
        "qcow2",
        "-c",
        "write -P 0x5a 65536 4096", // block 1
        "-c",
        "write -P 0x6b 3000000 200000", // blocks 45..48
        "-c",
        `write -P 0x7c ${SIZE - 65536} 65536`, // block 255
        disk,
      ]);
      await runTool("qemu-img", ["bitmap", "--disable", disk, "presync-1"]);
      const identity = newVolumeIdentity("vm2", SIZE, BLOCK);
      const state = await SourceState.init(fs, `${dir}/state`, identity);
      const replica = await new ReplicaStore(new DirectoryBackend(fs, `${dir}/store`)).init(
        identity,
      );
      const socket = `${dir}/q.sock`;
      const server = await startQemuNbd(socket, [
        "--read-only",
        "--bitmap",
        "presync-1",
        "-f",
        "qcow2",
        "-x",
        "vm2",
        disk,
      ]);
      try {
        const address = { transport: "unix" as const, path: socket };
        const tracker = new QemuBitmapTracker({
          address,
          exportName: "vm2",
          bitmap: "presync-1",
          identity,
          frozen: true,
        });
        const cut = await tracker.cut();
        try {
          assert.deepEqual([...cut.dirty.extents()], [[1, 1], [45, 4], [255, 1]]);
          assert.equal(cut.pointInTime, true);
          await state.recordCut(cut.dirty, Date.now());
          const report = await sendGeneration(state, cut, replica);
          assert.deepEqual([...report.sent.extents()], [[1, 1], [45, 4], [255, 1]]);
          report.sent.free();
        } finally {
          await cut.release();
        }
        const missing = new QemuBitmapTracker({
          address,
          exportName: "vm2",
          bitmap: "no-such-bitmap",
          identity,
        });
        await assertRejectsCode(missing.cut(), "NBD_REQUEST_FAILED");
      } finally {
        await server.stop();
        replica.close();
        state.close();
      }
      const compare = await runTool("qemu-img", [
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        disk,
        `${dir}/store/vm2/image`,
      ], -1);
      assert.equal(compare.code, 0, compare.stdout + compare.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
