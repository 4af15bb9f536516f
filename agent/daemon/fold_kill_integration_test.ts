import assert from "node:assert/strict";
import { checkReplica, waitConverged } from "../../fixtures/chaos.ts";
import { Cluster } from "../../fixtures/cluster.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { pauseHook, writeUntilPaused } from "../../fixtures/vm_pause.ts";
import { hashFile } from "../../fixtures/workload.ts";

const MiB = 1024 * 1024;
/** Slow enough that the folded generation is still on its way when a process is killed. */
const LINK = { delayMs: 5, rateBitsPerSecond: 20e6, queueBytes: 256 * 1024 };

async function writeRandom(path: string, prng: Prng, offset: number, bytes: number) {
  const file = await Deno.open(path, { write: true, create: true });
  await file.seek(offset, Deno.SeekMode.Start);
  await file.write(prng.fill(new Uint8Array(bytes)));
  file.close();
}

seededTest(
  "evacuate during a generation in flight, SIGKILL of serve then of the agent mid-fold: the " +
    "replica stays at a committed generation and the next run ends equal to the paused image",
  async (prng) => {
    const root = await Deno.makeTempDir({ prefix: "presync-fold-kill-" });
    try {
      const image = `${root}/source.img`;
      await Deno.writeFile(image, new Uint8Array(0));
      await Deno.truncate(image, 48 * MiB);
      await writeRandom(image, prng, 0, 16 * MiB);
      const cluster = await Cluster.start({
        root,
        image,
        wan: { up: LINK, down: LINK },
        agentArgs: ["--evacuate-hook", pauseHook(root)],
      });
      try {
        await waitConverged(cluster, image);
        const seededHash = await hashFile(image);
        // Generation 2: 24 MiB rewritten; evacuate once part of it is staged.
        await writeRandom(image, prng, 8 * MiB, 24 * MiB);
        await cluster.waitFor(
          "generation 2 on its way",
          async () => (await cluster.volumeStatus()).state === "sending",
        );
        // About a third of its 24 MiB crosses the 20 Mbit/s link meanwhile.
        await new Promise((resolve) => setTimeout(resolve, 4000));
        // The "VM" re-writes pages of the generation in flight until the hook pauses it.
        const vm = writeUntilPaused(root, image, prng, () => 2048 + prng.int(6144), 2);
        const evacuation = cluster.control("POST", "/volumes/vm/evacuate").catch(() => null);
        await vm;
        await cluster.waitFor(
          "the final cut folded into generation 2",
          () => Promise.resolve(/generation_folded/.test(cluster.agent.output)),
        );
        await cluster.serve.kill();
        let check = await checkReplica(root, seededHash);
        assert.ok(check.intact, `serve killed mid-fold: the replica is torn (${check.committed})`);
        cluster.startServe();
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await cluster.agent.kill();
        await cluster.serve.kill();
        check = await checkReplica(root, seededHash);
        assert.ok(check.intact, `agent killed mid-fold: the replica is torn (${check.committed})`);
        await evacuation;
        cluster.startServe();
        cluster.startAgent();
        // The VM stays paused: the resumed (folded) generation brings the replica to it.
        await waitConverged(cluster, image);
        for (const process of [cluster.agent, cluster.serve]) {
          assert.doesNotMatch(process.output, /STORE_CORRUPT|unhandled_rejection/, process.output);
        }
      } finally {
        await cluster.stop();
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);
