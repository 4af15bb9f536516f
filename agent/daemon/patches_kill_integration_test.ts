import assert from "node:assert/strict";
import { CHAOS_LINK, checkReplica, randomImage, waitConverged } from "../../fixtures/chaos.ts";
import { Cluster } from "../../fixtures/cluster.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { NbdClient } from "../nbd/mod.ts";

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;

/**
 * A cluster whose agent runs the nbd tracker: the image is seeded (generation 1), then the
 * "VM" writes one 4 KiB page into each of its blocks through presync's NBD server, so the
 * next generation travels as patches; `target` is killed with SIGKILL at a random instant
 * while they cross. The replica must be a committed generation, and converge once the
 * process is back.
 */
async function killDuringPatches(prng: Prng, target: "serve" | "agent"): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-patch-kill-" });
  try {
    const image = `${root}/source.img`;
    const size = 16 * MiB + 5000; // the last block is short
    await randomImage(image, prng, size);
    const seededHash = await hashFile(image);
    const socket = `${root}/nbd.sock`;
    const cluster = await Cluster.start({
      root,
      image,
      wan: { up: CHAOS_LINK, down: CHAOS_LINK },
      agentArgs: ["--tracker", "nbd", "--nbd-listen", `unix:${socket}`],
    });
    try {
      await waitConverged(cluster, image);
      const seeded = cluster.emu.counters().up.bytesIn;
      const client = await NbdClient.connect({ transport: "unix", path: socket }, "vm");
      try {
        for (let block = 0; block * BLOCK < size; block++) {
          const page = Math.min(prng.int(16), Math.floor((size - block * BLOCK - 1) / 4096));
          const offset = block * BLOCK + page * 4096;
          const length = Math.min(4096, size - offset);
          await client.write(offset, prng.fill(new Uint8Array(length)));
        }
        await client.flush();
      } finally {
        await client.close().catch(() => {});
      }
      await cluster.waitFor(
        "the first patches to go out",
        () => Promise.resolve(cluster.emu.counters().up.bytesIn > seeded + 64 * 1024),
      );
      await new Promise((resolve) => setTimeout(resolve, prng.int(120)));
      if (target === "serve") await cluster.serve.kill();
      else {
        await cluster.agent.kill();
        await new Promise((resolve) => setTimeout(resolve, 200 + prng.int(500)));
        await cluster.serve.kill();
      }
      const { committed, intact } = await checkReplica(root, seededHash);
      assert.ok(intact, `after kill -9 of ${target}: replica torn at generation ${committed}`);
      cluster.startServe();
      if (target === "agent") cluster.startAgent();
      await waitConverged(cluster, image);
    } finally {
      await cluster.stop();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

seededTest(
  "patches: kill -9 of serve while patches cross keeps the replica committed; it converges",
  (prng) => killDuringPatches(prng, "serve"),
);

seededTest(
  "patches: kill -9 of the agent while patches cross keeps the replica committed; it converges",
  (prng) => killDuringPatches(prng, "agent"),
);
