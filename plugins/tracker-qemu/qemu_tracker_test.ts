import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needQemu } from "../../fixtures/guest/qemu_process.ts";
import { BLOCK, SIZE, TrackerRig } from "./_test_rig.ts";
import { QemuTracker } from "./mod.ts";

const qemu = await needQemu(["qemu-img"]);

for (const format of ["raw", "qcow2"] as const) {
  Deno.test({
    name: `${format}: the first attach scans; each cut carries exactly the blocks written ` +
      `since the last, read as of the cut; release leaves only the recording bitmap`,
    ...qemu,
    async fn() {
      await using rig = await TrackerRig.start(format);
      await rig.write(0, 0x11);
      await rig.write(40, 0x12, 3 * BLOCK); // blocks 40..42
      const tracker = await rig.open();
      assert.equal(tracker.recovery.method, "scan");
      assert.equal(tracker.recovery.scannedDirtyBlocks, 4);
      await rig.write(3, 0x21);
      await rig.write(10, 0x22, 2 * BLOCK); // blocks 10..11
      const atCut = `${rig.dir}/at-cut.img`;
      const sent = await rig.sync(tracker, async () => {
        // The image as of the cut, then the guest overwrites part of the generation.
        await rig.snapshot(atCut);
        await rig.write(3, 0x31);
        await rig.write(10, 0x32);
        await rig.write(20, 0x33);
      });
      assert.deepEqual(sent, [[0, 1], [3, 1], [10, 2], [40, 3]]);
      await rig.assertReplicaEquals(atCut);
      const second = await rig.sync(tracker);
      assert.deepEqual(second, [[3, 1], [10, 1], [20, 1]]);
      await rig.assertReplicaEquals();
      assert.deepEqual(await rig.leftovers(), {
        bitmaps: ["presync-vm-3"],
        exports: [],
        jobs: [],
        nodes: [],
        files: [],
      });
      const nodes = await rig.writer.execute("query-named-block-nodes", { flat: true }) as {
        "node-name": string;
        "dirty-bitmaps"?: { name?: string; persistent: boolean; recording: boolean }[];
      }[];
      const bitmap = nodes.find((n) => n["node-name"] === "disk0")!["dirty-bitmaps"]!
        .find((b) => b.name === "presync-vm-3")!;
      assert.equal(bitmap.recording, true);
      assert.equal(bitmap.persistent, format === "qcow2");
    },
  });
}

Deno.test({
  name: "clear errors: no QEMU, an unknown node, a resized disk, a cut before the last is " +
    "released, and QEMU's one NBD server taken by someone else",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("raw");
    const gone = await assertRejectsCode(
      QemuTracker.open(rig.options({ qmpSocket: `${rig.dir}/nothing.sock` })),
      "CONNECTION_LOST",
    );
    assert.ok(gone.retryable);
    const unknown = await assertRejectsCode(rig.open({ node: "nope" }), "INVALID_ARGUMENT");
    assert.match(unknown.message, /no block node or drive named "nope"; it has: disk0, drive0/);
    await assertRejectsCode(
      rig.open({ identity: { ...rig.state.identity, sizeBytes: SIZE * 2 } }),
      "VOLUME_MISMATCH",
    );
    // By its drive id works as well as by node name.
    const tracker = await rig.open({ node: "drive0" });
    assert.equal(tracker.nodeName, "disk0");
    const cut = await tracker.cut();
    await assertRejectsCode(tracker.cut(), "INVALID_ARGUMENT");
    await cut.release();
    await rig.writer.execute("nbd-server-start", {
      addr: { type: "unix", data: { path: `${rig.dir}/libvirt-nbd.sock` } },
    });
    const taken = await assertRejectsCode(tracker.cut(), "QMP_COMMAND_FAILED");
    assert.ok(taken.retryable);
    assert.match(taken.message, /one NBD server at a time/);
    await rig.writer.execute("nbd-server-stop");
    await rig.write(7, 0x77);
    assert.deepEqual(await rig.sync(tracker), [[7, 1]], "the failed cut lost no write");
  },
});
