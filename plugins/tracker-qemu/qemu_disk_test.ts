import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needQemu, startQemu } from "../../fixtures/guest/qemu_process.ts";
import { runTool } from "../../fixtures/nbd_tools.ts";
import { ErrorCode } from "../../agent/errors.ts";
import { queryQemuDisk } from "./mod.ts";

const qemu = await needQemu(["qemu-img"]);
const SIZE = 16 * 1024 * 1024;

Deno.test({
  name: "a QEMU disk is found by node name, or by its guest device's id as libvirt sets it " +
    "(<alias name='ua-…'/>); a wrong name lists what there is; a dead socket is retryable",
  ...qemu,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-qemu-disk-" });
    try {
      await runTool("qemu-img", ["create", "-q", "-f", "qcow2", `${dir}/d.qcow2`, String(SIZE)]);
      // The graph libvirt builds: a file node, a format node, a virtio-blk device with an id.
      await using vm = await startQemu({
        dir,
        args: [
          "-machine",
          "pc",
          "-display",
          "none",
          "-blockdev",
          `driver=file,filename=${dir}/d.qcow2,node-name=libvirt-1-storage`,
          "-blockdev",
          "driver=qcow2,file=libvirt-1-storage,node-name=libvirt-1-format",
          "-device",
          "virtio-blk-pci,drive=libvirt-1-format,id=ua-db1",
        ],
      });
      const disk = { nodeName: "libvirt-1-format", driver: "qcow2", sizeBytes: SIZE };
      assert.deepEqual(await queryQemuDisk(vm.qmp[0], "libvirt-1-format"), disk);
      assert.deepEqual(await queryQemuDisk(vm.qmp[0], "ua-db1"), disk);
      const wrong = await assertRejectsCode(
        queryQemuDisk(vm.qmp[0], "db1"),
        ErrorCode.INVALID_ARGUMENT,
      );
      assert.match(wrong.message, /no block node or drive named "db1"; it has: .*libvirt-1-format/);
      assert.match(wrong.message, /ua-db1/);
      await vm.kill();
      const gone = await assertRejectsCode(
        queryQemuDisk(vm.qmp[0], "ua-db1"),
        ErrorCode.CONNECTION_LOST,
      );
      assert.equal(gone.retryable, true);
      assert.match(gone.message, /cannot reach the VM's QMP socket/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
