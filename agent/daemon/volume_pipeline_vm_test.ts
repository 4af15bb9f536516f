import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needQemu, startBareQemu } from "../../fixtures/guest/qemu_process.ts";
import { localVolume, memoryLog } from "../../fixtures/local_volume.ts";
import { until } from "../../fixtures/until.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { QmpVmControl } from "../qemu/mod.ts";
import type { VolumeLink } from "./volume_pipeline.ts";

/**
 * The pipeline's evacuation with a VM control over a real QEMU's QMP (a second monitor
 * watches): the VM is paused before the final cut, stays paused once evacuated, and runs
 * again when the evacuation fails with the VM paused.
 */
const qemu = await needQemu();
const KiB = 1024;

/** One turn of a pipeline's loop: `alive()` is true once. */
function oneTurn(): [() => boolean, (ms: number) => Promise<void>] {
  let turns = 0;
  return [() => turns++ === 0, () => Promise.resolve()];
}

/**
 * `link` with a destination that runs `onBegin` before each generation: a failure there
 * stands for the destination going away.
 */
function watched(link: VolumeLink, onBegin: (generation: number) => Promise<void>): VolumeLink {
  const replica = link.destination;
  return {
    ...link,
    destination: {
      resumeInfo: () => replica.resumeInfo(),
      beginGeneration: async (g, d, c, o) => {
        await onBegin(g);
        return replica.beginGeneration(g, d, c, o);
      },
      stage: (blocks) => replica.stage(blocks),
      flush: () => replica.flush(),
      commit: (g, r) => replica.commit(g, r),
    },
  };
}

async function inTemp(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-pipeline-vm-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/**
 * Runs `fn` in a temporary directory beside a guestless QEMU with two QMP monitors: `control`
 * for the pipeline, `watcher` for the test to look at the VM's state.
 */
async function withVm(
  fn: (root: string, control: QmpVmControl, watcher: QmpVmControl) => Promise<void>,
): Promise<void> {
  await using bare = await startBareQemu(2);
  const control = await QmpVmControl.connect(bare.vm.qmp[0]);
  const watcher = await QmpVmControl.connect(bare.vm.qmp[1]);
  try {
    await inTemp((root) => fn(root, control, watcher));
  } finally {
    await control.close();
    await watcher.close();
  }
}

Deno.test({
  name: "pipeline: an evacuation pauses the VM through QMP after the hook, before the final cut",
  ...qemu,
  fn: () =>
    withVm(async (root, control, watcher) => {
      const { log, lines } = memoryLog();
      const seen: string[] = [];
      await using v = await localVolume(root, "vm", new Uint8Array(256 * KiB).fill(1), {
        log,
        vm: control,
        evacuateHook: "notify-the-admin",
        runHook: async () => void seen.push(`hook while ${(await watcher.status()).state}`),
      });
      v.pipeline.attach(watched(await v.link(), async (g) => {
        seen.push(`generation ${g} while ${(await watcher.status()).state}`);
      }));
      await v.pipeline.run(...oneTurn());
      const evacuation = v.pipeline.evacuate();
      await v.pipeline.run(...oneTurn());
      const report = await evacuation;
      assert.equal(report.verified, true);
      assert.deepEqual(seen, [
        "generation 1 while running",
        "hook while running",
        "generation 2 while paused",
      ]);
      // Evacuated: the VM is to run at the destination now, so it stays paused here.
      assert.equal((await watcher.status()).state, "paused");
      assert.ok(lines.some((l) => l.event === "vm_paused" && l.fields.before === "running"));
      assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
    }),
});

Deno.test({
  name: "pipeline: a VM paused for an evacuation runs again when the destination stays away",
  ...qemu,
  fn: () =>
    withVm(async (root, control, watcher) => {
      const { log, lines } = memoryLog();
      await using v = await localVolume(root, "vm", new Uint8Array(256 * KiB).fill(2), {
        log,
        vm: control,
        evacuatePausedTimeoutMs: 300,
      });
      const gone = new PresyncError(ErrorCode.CONNECTION_LOST, "connection refused", {
        retryable: true,
      });
      v.pipeline.attach(
        watched(await v.link(), (g) => g === 1 ? Promise.resolve() : Promise.reject(gone)),
      );
      await v.pipeline.run(...oneTurn());
      const evacuation = v.pipeline.evacuate();
      await assertRejectsCode(v.pipeline.run(...oneTurn()), ErrorCode.CONNECTION_LOST);
      assert.equal((await watcher.status()).state, "paused", "paused before the final cut");
      // As the supervisor does when the link breaks: the volume waits for the link.
      await v.pipeline.detach(gone);
      v.pipeline.linkDown(gone);
      const err = await assertRejectsCode(evacuation, ErrorCode.TIMEOUT);
      assert.match(err.message, /unreachable for 0.3 s while the VM of vm was paused/);
      await until("the VM running again", async () => (await watcher.status()).running, {
        timeoutMs: 10_000,
      });
      assert.equal(v.pipeline.evacuating, false);
      assert.ok(lines.some((l) => l.event === "vm_resumed" && l.fields.reason === "TIMEOUT"));
    }),
});

Deno.test({
  name: "pipeline: a VM that was paused before the evacuation stays paused when it fails",
  ...qemu,
  fn: () =>
    withVm(async (root, control, watcher) => {
      const { log } = memoryLog();
      const v = await localVolume(root, "vm", new Uint8Array(256 * KiB).fill(3), {
        log,
        vm: control,
        evacuatePausedTimeoutMs: 100,
      });
      try {
        await watcher.pause();
        const gone = new PresyncError(ErrorCode.CONNECTION_LOST, "connection refused", {
          retryable: true,
        });
        v.pipeline.attach(watched(await v.link(), () => Promise.reject(gone)));
        const evacuation = v.pipeline.evacuate();
        await assertRejectsCode(v.pipeline.run(...oneTurn()), ErrorCode.CONNECTION_LOST);
        v.pipeline.linkDown(gone);
        v.pipeline.park(new PresyncError(ErrorCode.STORE_CORRUPT, "state damaged"));
        await assertRejectsCode(evacuation, ErrorCode.STORE_CORRUPT);
      } finally {
        // close() waits for any resume the failure started.
        await v[Symbol.asyncDispose]();
      }
      assert.equal((await watcher.status()).state, "paused");
    }),
});

Deno.test({
  name:
    "pipeline: an agent stopping during an evacuation resumes the VM it paused before it closes",
  ...qemu,
  fn: () =>
    withVm(async (root, control, watcher) => {
      const { log } = memoryLog();
      const v = await localVolume(root, "vm", new Uint8Array(256 * KiB).fill(4), {
        log,
        vm: control,
      });
      const gone = new PresyncError(ErrorCode.CONNECTION_LOST, "connection refused", {
        retryable: true,
      });
      try {
        v.pipeline.attach(watched(await v.link(), () => Promise.reject(gone)));
        const evacuation = v.pipeline.evacuate();
        await assertRejectsCode(v.pipeline.run(...oneTurn()), ErrorCode.CONNECTION_LOST);
        assert.equal((await watcher.status()).state, "paused");
        v.pipeline.stopWith(new PresyncError(ErrorCode.SESSION_CLOSED, "the agent stopped"));
        await assertRejectsCode(evacuation, ErrorCode.SESSION_CLOSED);
      } finally {
        // As the agent does on its way out: close() waits for the resume.
        await v[Symbol.asyncDispose]();
      }
      assert.equal((await watcher.status()).state, "running");
    }),
});
