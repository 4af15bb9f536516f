import assert from "node:assert/strict";
import { TrackerRig } from "./_test_rig.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needQemu } from "../../fixtures/guest/qemu_process.ts";
import { ErrorCode } from "../../agent/errors.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { openSourceVolume } from "../../agent/source/open_source_volume.ts";

const qemu = await needQemu(["qemu-img"]);

Deno.test({
  name: "a qmp: volume takes its size from QEMU, shares a 0770 directory beside the QMP " +
    "socket, and refuses a symlink planted in its place",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("qcow2");
    const fs = new DenoFileSystem();
    const options = {
      fs,
      name: "db1",
      imagePath: `qmp:unix:${rig.vm.qmp[0]}#disk0`,
      stateDir: `${rig.dir}/db1-state`,
      blockSize: 65536,
    };
    const workDir = `${rig.dir}/presync-db1`;
    await Deno.mkdir(`${rig.dir}/elsewhere`);
    await Deno.symlink(`${rig.dir}/elsewhere`, workDir);
    const planted = await assertRejectsCode(openSourceVolume(options), ErrorCode.INVALID_ARGUMENT);
    assert.match(planted.message, /presync-db1 must be a directory .* it is a symbolic link/);
    await Deno.remove(workDir);
    const { state, tracker, vm } = await openSourceVolume(options);
    try {
      assert.equal(state.identity.sizeBytes, 16 * 1024 * 1024);
      assert.equal((await Deno.lstat(workDir)).mode! & 0o777, 0o770);
      assert.deepEqual(await vm!.status(), { running: true, state: "running" });
      await rig.write(4, 0x42);
      const cut = await tracker.cut();
      try {
        assert.equal(cut.pointInTime, true);
        assert.deepEqual([...cut.dirty.extents()], [[4, 1]]);
      } finally {
        await cut.release();
      }
    } finally {
      await tracker.close();
      state.close();
    }
  },
});
