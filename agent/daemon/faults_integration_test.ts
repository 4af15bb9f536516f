import assert from "node:assert/strict";
import { randomImage, waitConverged } from "../../fixtures/chaos.ts";
import { Cluster, jsonLines } from "../../fixtures/cluster.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { hashFile } from "../../fixtures/workload.ts";

const MiB = 1024 * 1024;
const LINK = { delayMs: 5, rateBitsPerSecond: 100e6, queueBytes: 256 * 1024 };

async function inTemp(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-faults-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function copyDir(from: string, to: string): Promise<void> {
  const out = await new Deno.Command("cp", { args: ["-a", from, to] }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

seededTest(
  "faults: two volumes, one resized: it is parked with the cause in status, the other syncs on",
  async (prng) => {
    await inTemp(async (root) => {
      const [a, b] = [`${root}/a.img`, `${root}/b.img`];
      await randomImage(a, prng, 4 * MiB);
      await randomImage(b, prng, 4 * MiB);
      const cluster = await Cluster.start({
        root,
        image: a,
        volume: "a",
        moreVolumes: [{ name: "b", image: b }],
        wan: { up: LINK, down: LINK },
      });
      try {
        await cluster.waitFor("both volumes synced", async () => {
          const [sa, sb] = [await cluster.volumeStatus("a"), await cluster.volumeStatus("b")];
          return Number(sa.committedGeneration) >= 1 && Number(sb.committedGeneration) >= 1;
        });
        // The VM's disk a grows while the agent is down; b gets new data.
        await cluster.agent.kill("SIGTERM");
        await Deno.truncate(a, 6 * MiB);
        await randomImage(b, prng, 4 * MiB);
        cluster.startAgent();
        await cluster.waitFor(
          "a to be parked",
          async () => (await cluster.volumeStatus("a")).state === "parked",
        );
        const parked = await cluster.volumeStatus("a");
        assert.equal(parked.lastErrorCode, "VOLUME_MISMATCH");
        assert.match(String(parked.lastError), /is now 6291456 bytes/);
        const line = jsonLines(cluster.agent).find((l) => l.event === "volume_parked")!;
        assert.equal(line.volume, "a");
        assert.ok(String(line.fix).length > 20, JSON.stringify(line));
        // b converges to its new content; the agent does not exit.
        const expected = await hashFile(b);
        await cluster.waitFor(
          "b to sync its new data",
          async () => await hashFile(`${root}/store/b/image`) === expected,
        );
        assert.equal(cluster.agent.exited, false, cluster.agent.output);
      } finally {
        await cluster.stop();
      }
    });
  },
);

seededTest(
  "faults: a second agent on a copied state directory is refused naming both; the first syncs on",
  async (prng) => {
    await inTemp(async (root) => {
      const image = `${root}/source.img`;
      await randomImage(image, prng, 4 * MiB);
      const cluster = await Cluster.start({ root, image, wan: { up: LINK, down: LINK } });
      const copy = { stateDir: `${root}/state-copy`, control: `${root}/run/agent-copy.sock` };
      let second = null;
      try {
        await waitConverged(cluster, image);
        await cluster.agent.kill("SIGTERM");
        await copyDir(`${root}/state`, copy.stateDir);
        cluster.startAgent();
        await cluster.waitFor(
          "the first agent back",
          async () => (await cluster.volumeStatus()).state === "idle",
        );
        second = cluster.spawnAgent(copy);
        const refused = await (async () => {
          let status: Record<string, unknown> = {};
          await cluster.waitFor("the second agent to be refused", async () => {
            status = await cluster.volumeStatus("vm", copy.control);
            return status.state === "parked";
          });
          return status;
        })();
        assert.equal(refused.lastErrorCode, "VOLUME_HELD");
        const message = String(refused.lastError);
        assert.match(message, /another live source agent: agent [0-9a-f]{12} on .* \(pid \d+\)/);
        assert.match(message, /refusing agent [0-9a-f]{12} on .* \(pid \d+\)/);
        assert.match(cluster.serve.output, /source_refused/);
        // The holder keeps syncing; neither agent exits.
        await randomImage(image, prng, 4 * MiB);
        await waitConverged(cluster, image);
        assert.equal(cluster.agent.exited, false, cluster.agent.output);
        assert.equal(second.exited, false, second.output);
        assert.doesNotMatch(cluster.agent.output, /GENERATION_MISMATCH/);
      } finally {
        await second?.kill("SIGTERM");
        await cluster.stop();
      }
    });
  },
);

seededTest(
  "faults: a state directory restored from an old backup is explained; evacuate fails at once",
  async (prng) => {
    await inTemp(async (root) => {
      const image = `${root}/source.img`;
      await randomImage(image, prng, 4 * MiB);
      const cluster = await Cluster.start({ root, image, wan: { up: LINK, down: LINK } });
      try {
        await waitConverged(cluster, image);
        await cluster.agent.kill("SIGTERM");
        await copyDir(`${root}/state`, `${root}/backup`);
        cluster.startAgent();
        await randomImage(image, prng, 4 * MiB);
        await waitConverged(cluster, image);
        await cluster.agent.kill("SIGTERM");
        await Deno.remove(`${root}/state`, { recursive: true });
        await Deno.rename(`${root}/backup`, `${root}/state`);
        cluster.startAgent();
        await cluster.waitFor(
          "the stale state to be found",
          async () => (await cluster.volumeStatus()).state === "parked",
        );
        const status = await cluster.volumeStatus();
        assert.equal(status.lastErrorCode, "SOURCE_STATE_STALE");
        assert.match(String(status.lastError), /older than the replica/);
        // Before, this waited 150 s without a word: a deadline tells a hang from an answer.
        let deadline: ReturnType<typeof setTimeout> | undefined;
        const reply = await Promise.race([
          cluster.control("POST", "/volumes/vm/evacuate"),
          new Promise<never>((_, reject) => {
            deadline = setTimeout(() => reject(new Error("evacuate hangs")), 30_000);
          }),
        ]).finally(() => clearTimeout(deadline));
        assert.equal(reply.ok, false);
        assert.equal(reply.code, "SOURCE_STATE_STALE", JSON.stringify(reply));
        assert.match(String(reply.message), /restored from a backup/);
      } finally {
        await cluster.stop();
      }
    });
  },
);
