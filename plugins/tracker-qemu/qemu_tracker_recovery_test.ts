import assert from "node:assert/strict";
import { sendGeneration } from "../../agent/sync/send_generation.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needQemu } from "../../fixtures/guest/qemu_process.ts";
import { TrackerRig } from "./_test_rig.ts";

const qemu = await needQemu(["qemu-img"]);

Deno.test({
  name: "agent killed -9 mid-generation: after a recorded cut it resumes without resending it; " +
    "after an unrecorded cut it folds the frozen bitmap into the next generation",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("raw");
    await rig.write(1, 0x11);
    await rig.write(2, 0x12);
    // Killed after recording generation 1: the agent has it pending.
    const first = await rig.crashAfterCut("record");
    assert.deepEqual(first, { generation: 1, extents: [[1, 2]] });
    await rig.write(5, 0x15);
    await rig.reopenState();
    assert.equal(rig.state.pending?.generation, 1);
    const tracker = await rig.open();
    assert.equal(tracker.recovery.method, "bitmap");
    assert.deepEqual(tracker.recovery.removed, ["presync-vm-1"]);
    assert.deepEqual(await rig.leftovers(), {
      bitmaps: ["presync-vm-2"],
      exports: [],
      jobs: [],
      nodes: [],
      files: [],
    });
    // The agent resends its pending generation, then cuts the next: only block 5.
    const resumed = await tracker.resume(rig.state.pending!.dirty);
    try {
      assert.equal(resumed.pointInTime, false);
      (await sendGeneration(rig.state, resumed, rig.replica)).sent.free();
    } finally {
      await resumed.release();
    }
    assert.deepEqual(await rig.sync(tracker), [[5, 1]]);
    await rig.assertReplicaEquals();
    await tracker.close();

    // Killed between the QMP rotation and recording generation 3.
    await rig.write(7, 0x17);
    const second = await rig.crashAfterCut("no-record");
    assert.deepEqual(second, { generation: 3, extents: [[7, 1]] });
    await rig.write(9, 0x19);
    await rig.reopenState();
    assert.equal(rig.state.pending, null);
    const again = await rig.open();
    assert.equal(again.recovery.method, "bitmap");
    assert.deepEqual(again.recovery.merged, ["presync-vm-3"]);
    assert.deepEqual(await rig.sync(again), [[7, 1], [9, 1]]);
    await rig.assertReplicaEquals();
  },
});

Deno.test({
  name: "raw: a VM stopped and continued keeps tracking; QEMU restarted loses the bitmap, so " +
    "the tracker reattaches by itself and scans",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("raw");
    const tracker = await rig.open();
    await rig.writer.execute("stop");
    await rig.write(1, 0x21); // the block layer still works while the guest is paused
    assert.deepEqual(await rig.sync(tracker), [[1, 1]]);
    await rig.writer.execute("cont");
    await rig.write(2, 0x22);
    await rig.stopQemu("quit");
    await rig.startQemu();
    await rig.write(3, 0x23);
    assert.deepEqual(await rig.sync(tracker), [[2, 2]]);
    assert.equal(tracker.recovery.method, "scan");
    assert.match(tracker.recovery.reason, /no presync bitmap/);
    assert.equal(tracker.recovery.scannedDirtyBlocks, 2);
    await rig.assertReplicaEquals();
  },
});

Deno.test({
  name: "qcow2: the persistent bitmap survives a clean QEMU restart (no scan); after QEMU is " +
    "killed it is inconsistent, so the tracker scans",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("qcow2");
    const tracker = await rig.open();
    await rig.write(1, 0x31);
    assert.deepEqual(await rig.sync(tracker), [[1, 1]]);
    await rig.write(2, 0x32);
    await rig.stopQemu("quit");
    await rig.startQemu();
    await rig.write(3, 0x33);
    assert.deepEqual(await rig.sync(tracker), [[2, 2]]);
    assert.equal(tracker.recovery.method, "bitmap");
    await rig.write(4, 0x34);
    await rig.flush(); // what the guest made durable survives the kill
    // A bitmap QEMU loaded from the image is marked in use there; killed, it stays so.
    await rig.stopQemu("quit");
    await rig.startQemu();
    await rig.stopQemu("kill");
    await rig.startQemu();
    await rig.write(5, 0x35);
    assert.deepEqual(await rig.sync(tracker), [[4, 2]]);
    assert.equal(tracker.recovery.method, "scan");
    assert.match(tracker.recovery.reason, /inconsistent/);
    await rig.assertReplicaEquals();
  },
});

Deno.test({
  name: "a bitmap removed by someone else: the cut fails with QEMU_BITMAP_LOST, the next scans " +
    "and misses nothing",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("raw");
    const tracker = await rig.open();
    await rig.write(1, 0x41);
    assert.deepEqual(await rig.sync(tracker), [[1, 1]]);
    await rig.write(2, 0x42);
    await rig.writer.execute("block-dirty-bitmap-remove", { node: "disk0", name: "presync-vm-2" });
    await rig.write(3, 0x43);
    const err = await assertRejectsCode(tracker.cut(), "QEMU_BITMAP_LOST");
    assert.ok(err.retryable);
    assert.match(err.message, /presync-vm-2 .* removed by someone else/);
    await rig.write(4, 0x44);
    assert.deepEqual(await rig.sync(tracker), [[2, 3]]);
    assert.equal(tracker.recovery.method, "scan");
    await rig.assertReplicaEquals();
    assert.deepEqual((await rig.leftovers()).nodes, []);
  },
});

Deno.test({
  name: "QEMU killed while a generation is read: the read fails, release still succeeds, and " +
    "the next cut reattaches to the new QEMU and scans",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("raw");
    const tracker = await rig.open();
    await rig.write(1, 0x51);
    const cut = await tracker.cut();
    await rig.stopQemu("kill");
    await assert.rejects(cut.read(1, 1));
    await cut.release();
    await rig.startQemu();
    await rig.write(2, 0x52);
    // That cut was never recorded nor sent: the scan finds both blocks against the manifest.
    assert.deepEqual(await rig.sync(tracker), [[1, 2]]);
    assert.equal(tracker.recovery.method, "scan");
    await rig.assertReplicaEquals();
  },
});
