import assert from "node:assert/strict";
import { Cluster, type ClusterOptions, jsonLines, PresyncProcess } from "../../fixtures/cluster.ts";
import { needQemu } from "../../fixtures/guest/qemu_process.ts";
import { runTool } from "../../fixtures/nbd_tools.ts";
import { BLOCK, TrackerRig } from "./_test_rig.ts";

/**
 * `presync agent --volume vm=qmp:unix:SOCKET#disk0` as a process, against a running QEMU
 * (no guest: the test writes through the drive with qemu-io over a second QMP monitor), a
 * `presync serve` and the WAN emulator: background sync, writes between generations,
 * `presync evacuate` pausing the VM through QMP, and an evacuation whose destination went
 * away resuming the VM.
 */
const qemu = await needQemu(["qemu-img"]);

/** Runs `fn` with a QEMU (qcow2 disk, node `disk0`) and a cluster syncing it. */
async function withQemuCluster(
  agentArgs: string[],
  wan: ClusterOptions["wan"],
  fn: (rig: TrackerRig, cluster: Cluster, root: string) => Promise<void>,
  idleTimeoutSeconds?: number,
): Promise<void> {
  await using rig = await TrackerRig.start("qcow2");
  const root = `${rig.dir}/c`;
  await Deno.mkdir(root);
  let cluster: Cluster | null = null;
  try {
    cluster = await Cluster.start({
      root,
      image: `qmp:unix:${rig.vm.qmp[0]}#disk0`,
      agentArgs,
      wan,
      idleTimeoutSeconds,
    });
    await fn(rig, cluster, root);
  } finally {
    await cluster?.stop();
  }
}

/** Whether the replica in `root/store` equals the disk now (a raw snapshot of it). */
async function replicaEqualsDisk(rig: TrackerRig, root: string): Promise<boolean> {
  const now = `${rig.dir}/now.img`;
  await rig.snapshot(now);
  const out = await runTool("qemu-img", [
    "compare",
    "-q",
    "-U",
    "-f",
    "raw",
    "-F",
    "raw",
    now,
    `${root}/store/vm/image`,
  ], -1);
  return out.code === 0;
}

async function committed(cluster: Cluster): Promise<number> {
  return Number((await cluster.volumeStatus()).committedGeneration);
}

async function runState(rig: TrackerRig): Promise<string> {
  return ((await rig.writer.execute("query-status")) as { status: string }).status;
}

Deno.test({
  name: "agent on a qmp: volume: syncs a running QEMU's disk, writes between generations " +
    "arrive, evacuate pauses the VM through QMP and the replica equals the disk",
  ...qemu,
  async fn() {
    await withQemuCluster([], undefined, async (rig, cluster, root) => {
      await rig.write(3, 0x11);
      await rig.write(100, 0x22, 3 * BLOCK);
      await cluster.waitFor(
        "the writes before the first cuts at the destination",
        async () => (await committed(cluster)) >= 1 && await replicaEqualsDisk(rig, root),
      );
      const before = await committed(cluster);
      await rig.write(7, 0x33);
      await rig.write(101, 0x44, 1000);
      await cluster.waitFor(
        "the writes between generations at the destination",
        async () => (await committed(cluster)) > before && await replicaEqualsDisk(rig, root),
      );
      assert.match(cluster.agent.output, /"qemu_tracker_attached"/);
      assert.equal(await runState(rig), "running");
      await rig.write(200, 0x55, 2 * BLOCK);
      const evacuate = new PresyncProcess([
        "evacuate",
        "vm",
        "--control",
        cluster.agentControl,
        "--json",
      ]);
      const status = await evacuate.wait(120_000);
      assert.equal(status.code, 0, evacuate.output + cluster.agent.output);
      const report = jsonLines(evacuate).at(-1)!;
      assert.equal(report.verified, true, evacuate.output);
      // QMP stop came from the agent (no hook given), and the VM stays paused.
      assert.equal(await runState(rig), "paused");
      assert.match(cluster.agent.output, /"vm_paused"/);
      assert.ok(await replicaEqualsDisk(rig, root), "the replica equals the paused disk");
    });
  },
});

Deno.test({
  name: "agent on a qmp: volume: an evacuation whose destination goes away after the VM " +
    "was paused times out and resumes the VM",
  ...qemu,
  async fn() {
    // A slow link and no compression, so that the final generation takes a while to send;
    // no cut between the first and the evacuation's.
    const args = ["--interval", "3600", "--codec", "none", "--evacuate-timeout", "3"];
    const wan = { up: { rateBitsPerSecond: 2_000_000 }, down: { rateBitsPerSecond: 2_000_000 } };
    // serve's kill closes the link at once; a short idle timeout would also end it whenever
    // a loaded machine stalls this process's emulated link for 3 s, before the final
    // generation was seen on its way (a CI failure at load ~8).
    await withQemuCluster(args, wan, async (rig, cluster) => {
      await cluster.waitFor("generation 1", async () => (await committed(cluster)) >= 1);
      for (let block = 10; block < 10 + 48; block++) await rig.write(block, block);
      const evacuate = new PresyncProcess([
        "evacuate",
        "vm",
        "--control",
        cluster.agentControl,
        "--timeout",
        "2",
        "--json",
      ]);
      try {
        await cluster.waitFor("the final generation on its way", async () => {
          const evacuation = (await cluster.volumeStatus()).evacuation as
            | { step: string; finalGeneration: number | null }
            | null;
          return evacuation?.step === "sending" && evacuation.finalGeneration !== null;
        });
        assert.equal(await runState(rig), "paused", "paused before the final cut");
        await cluster.serve.kill();
        const status = await evacuate.wait(120_000);
        assert.equal(status.code, 5, evacuate.output);
        await cluster.waitFor(
          "the VM running again",
          async () => await runState(rig) === "running",
        );
        const evacuation = (await cluster.volumeStatus()).evacuation as {
          step: string;
          detail: string;
        };
        assert.equal(evacuation.step, "failed");
        assert.match(evacuation.detail, /unreachable for 3 s while the VM of vm was paused/);
        assert.match(cluster.agent.output, /"vm_resumed"/);
        assert.equal(cluster.agent.exited, false, "the agent carries on");
      } finally {
        await evacuate.kill();
      }
    }, 20);
  },
});

Deno.test({
  name: "agent started before the VM: the qmp: volume waits parked, then starts by itself " +
    "once QEMU is up, and syncs",
  ...qemu,
  async fn() {
    await using rig = await TrackerRig.start("qcow2");
    await rig.stopQemu("quit");
    const root = `${rig.dir}/c`;
    await Deno.mkdir(root);
    let cluster: Cluster | null = null;
    try {
      cluster = await Cluster.start({ root, image: `qmp:unix:${rig.vm.qmp[0]}#disk0` });
      const parked = await cluster.volumeStatus();
      assert.equal(parked.state, "parked");
      assert.equal(parked.lastErrorCode, "CONNECTION_LOST");
      assert.match(String(parked.lastError), /cannot reach the VM's QMP socket/);
      await rig.startQemu();
      await rig.write(9, 0x77);
      await cluster.waitFor(
        "the volume started and synced without presync resume",
        async () => (await committed(cluster!)) >= 1 && await replicaEqualsDisk(rig, root),
      );
    } finally {
      await cluster?.stop();
    }
  },
});
