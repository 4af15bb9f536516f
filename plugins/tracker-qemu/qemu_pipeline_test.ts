import assert from "node:assert/strict";
import { VolumePipeline } from "../../agent/daemon/volume_pipeline.ts";
import { ErrorCode } from "../../agent/errors.ts";
import { SourceState } from "../../agent/source/source_state.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { FailRenameFileSystem } from "../../fixtures/fail_rename_fs.ts";
import { needQemu } from "../../fixtures/guest/qemu_process.ts";
import { localLink, memoryLog } from "../../fixtures/local_volume.ts";
import { TrackerRig } from "./_test_rig.ts";

const qemu = await needQemu(["qemu-img"]);

/** One turn of a pipeline's loop: `alive()` is true once. */
function oneTurn(): [() => boolean, (ms: number) => Promise<void>] {
  let turns = 0;
  return [() => turns++ === 0, () => Promise.resolve()];
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: "pipeline on the qemu tracker: a cut whose recording failed keeps its frozen bitmap " +
    "and is sent by the next turn, so no write is lost",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("raw");
    const fs = new FailRenameFileSystem("/pending.json");
    rig.state.close();
    rig.state = await SourceState.open(fs, `${rig.dir}/state`);
    const tracker = await rig.open({ fs });
    const { log } = memoryLog();
    const pipeline = new VolumePipeline({
      name: "vm",
      image: `qmp:unix:${rig.vm.qmp[0]}#disk0`,
      state: rig.state,
      tracker,
      intervalMs: 1,
      log,
    });
    try {
      pipeline.attach(localLink(rig.replica));
      await pipeline.run(...oneTurn());
      assert.equal(pipeline.commits, 1);
      await rig.write(5, 0xab);
      await rig.write(77, 0xcd, 3000);
      fs.failures = 1;
      await delay(5);
      await assertRejectsCode(pipeline.run(...oneTurn()), ErrorCode.NO_SPACE);
      assert.equal(fs.failed, 1);
      // The unrecorded cut still holds its frozen bitmap in QEMU.
      assert.ok((await rig.leftovers()).bitmaps.includes("presync-vm-2"));
      await delay(5);
      await pipeline.run(...oneTurn());
      assert.equal(pipeline.commits, 2);
      assert.equal(rig.state.committedGeneration, 2);
      await rig.assertReplicaEquals();
      assert.deepEqual((await rig.leftovers()).bitmaps, ["presync-vm-3"]);
    } finally {
      await pipeline.close();
    }
  },
});
