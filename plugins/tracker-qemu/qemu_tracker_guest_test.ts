import { DirectoryBackend } from "../store-directory/mod.ts";
import assert from "node:assert/strict";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { QmpVmControl } from "../../agent/qemu/mod.ts";
import { SourceState } from "../../agent/source/source_state.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import type { ReplicaVolume } from "../../agent/store/replica_volume.ts";
import { sendGeneration } from "../../agent/sync/send_generation.ts";
import { newVolumeIdentity } from "../../agent/volume/volume_identity.ts";
import { makeGuestDisk } from "../../fixtures/guest/guest_disk.ts";
import { buildGuest, type GuestImage } from "../../fixtures/guest/guest_image.ts";
import { startGuest } from "../../fixtures/guest/guest_vm.ts";
import { needQemu } from "../../fixtures/guest/qemu_process.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { QemuTracker } from "./mod.ts";

const tools = await needQemu(["mkfs.ext4", "cpio", "busybox", "apt-get"]);
const SIZE = 64 << 20;

async function syncOnce(tracker: QemuTracker, state: SourceState, replica: ReplicaVolume) {
  const cut = await tracker.cut();
  try {
    assert.equal(cut.pointInTime, true);
    await state.recordCut(cut.dirty, Date.now());
    (await sendGeneration(state, cut, replica)).sent.free();
  } finally {
    await cut.release();
  }
}

async function verify(image: GuestImage, dir: string, disk: string): Promise<string> {
  await using guest = await startGuest({ image, dir, disk, mode: "verify" });
  await guest.poweredOff();
  return (await guest.waitFor(/PRESYNC-VERIFY (PASS|FAIL)[^\r\n]*/))[0];
}

Deno.test({
  name: "a real guest writing on its own disk, tracked over QMP only: every generation synced " +
    "while it writes is a consistent file system, and after a QMP pause the last one holds " +
    "every round the guest reported durable",
  ...tools,
  fn: () =>
    withSeed(async (prng) => {
      const image = await buildGuest();
      const dir = await Deno.makeTempDir({ prefix: "presync-qemu-guest-" });
      const fs = new DenoFileSystem();
      const disk = `${dir}/disk.img`;
      await makeGuestDisk(disk, SIZE, prng);
      await Deno.mkdir(`${dir}/work`);
      const identity = newVolumeIdentity("vm", SIZE, 64 * 1024);
      const state = await SourceState.init(fs, `${dir}/state`, identity);
      const replica = await new ReplicaStore(new DirectoryBackend(fs, `${dir}/store`)).init(
        identity,
      );
      let tracker: QemuTracker | null = null;
      try {
        let lastDurable = 0;
        {
          await using source = await startGuest({
            image,
            dir,
            disk,
            mode: "workload",
            files: 4,
            qmpMonitors: 2,
          });
          await source.waitFor(/PRESYNC-ROUND 2 durable/);
          tracker = await QemuTracker.open({
            qmpSocket: `${dir}/qmp-0.sock`,
            node: "virtio0", // the drive id QEMU gives -drive if=virtio
            identity,
            manifest: state.manifest,
            recordedGeneration: 0,
            stateDir: `${dir}/state`,
            workDir: `${dir}/work`,
          });
          assert.equal(tracker.recovery.method, "scan");
          for (let round = 3; round <= 4; round++) {
            await source.waitFor(new RegExp(`PRESYNC-ROUND ${round} durable`));
            await syncOnce(tracker, state, replica);
          }
          // The replica as of a generation cut while the guest wrote.
          await Deno.copyFile(`${dir}/store/vm/image`, `${dir}/mid-sync.img`);
          await source.waitFor(/PRESYNC-ROUND 6 durable/);
          const vm = await QmpVmControl.connect(`${dir}/qmp-1.sock`);
          await vm.pause();
          await vm.close();
          await syncOnce(tracker, state, replica);
          const rounds = [...(await source.output()).matchAll(/PRESYNC-ROUND (\d+) durable/g)];
          lastDurable = Number(rounds.at(-1)![1]);
        }
        assert.match(await verify(image, dir, `${dir}/mid-sync.img`), /^PRESYNC-VERIFY PASS/);
        const final = await verify(image, dir, `${dir}/store/vm/image`);
        const pass = /^PRESYNC-VERIFY PASS rounds=\d+ last=(\d+)/.exec(final);
        assert.ok(pass, final);
        assert.ok(Number(pass[1]) >= lastDurable, `${final}; the guest reported ${lastDurable}`);
      } finally {
        await tracker?.close();
        replica.close();
        state.close();
        await Deno.remove(dir, { recursive: true });
      }
    }),
});
