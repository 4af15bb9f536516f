import assert from "node:assert/strict";
import { needQemu, startBareQemu } from "../../fixtures/guest/qemu_process.ts";
import { QmpVmControl } from "./vm_control.ts";

const qemu = await needQemu();

Deno.test({
  name: "VM control over QMP: pause stops the VM and is idempotent; resume runs it again",
  ...qemu,
  async fn() {
    await using rig = await startBareQemu();
    const vm = await QmpVmControl.connect(rig.vm.qmp[0]);
    try {
      assert.deepEqual(await vm.status(), { running: true, state: "running" });
      await vm.pause();
      await vm.pause();
      assert.deepEqual(await vm.status(), { running: false, state: "paused" });
      await vm.resume();
      await vm.resume();
      assert.deepEqual(await vm.status(), { running: true, state: "running" });
    } finally {
      await vm.close();
    }
    await vm.close();
  },
});
