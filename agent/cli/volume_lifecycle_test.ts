import assert from "node:assert/strict";
import { Cluster } from "../../fixtures/cluster.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { serveReplica } from "../export/mod.ts";
import { ExitCode } from "./exit_codes.ts";
import { storeFromFlag } from "./_store.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Runs `presync` as a separate process, as an operator would. */
async function presync(...args: string[]): Promise<{ code: number; out: string }> {
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: result.code, out: text.decode(result.stdout) + text.decode(result.stderr) };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "presync-volumes-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function writeImage(path: string, data: Uint8Array, sizeBytes: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true });
  await file.truncate(sizeBytes);
  await file.write(data);
  file.close();
}

seededTest("volumes and delete --store: listed, deleted only with --yes, refused while exported", (
  prng,
) =>
  withDir(async (dir) => {
    const image = `${dir}/disk.img`;
    await writeImage(image, prng.fill(new Uint8Array(300_000)), 2 * 1024 * 1024);
    const store = `${dir}/store`;
    assert.equal((await presync("sync", "--local", image, store, "--volume", "disk")).code, 0);
    const listed = await presync("volumes", "--store", store, "--json");
    assert.equal(listed.code, ExitCode.OK, listed.out);
    const [row] = JSON.parse(listed.out).volumes;
    assert.equal(row.name, "disk");
    assert.equal(row.sizeBytes, 2 * 1024 * 1024);
    assert.equal(row.committedGeneration, 1);
    assert.equal(row.initialising, false);
    assert.ok(row.allocatedBytes >= 300_000, `allocated ${row.allocatedBytes}`);
    assert.ok(row.ageSeconds >= 0 && row.ageSeconds < 600, `age ${row.ageSeconds}`);
    assert.match((await presync("volumes", "--store", store)).out, /^disk\s+2\.0 MiB\s+1\s/m);

    const unconfirmed = await presync("delete", "disk", "--store", store);
    assert.equal(unconfirmed.code, ExitCode.USAGE);
    assert.match(unconfirmed.out, /--yes/);
    // An export in this process holds the volume: the other process must not delete it.
    const serving = await serveReplica({
      store: storeFromFlag({ store }),
      volume: "disk",
      listen: [{ transport: "unix", path: `${dir}/e.sock` }],
    });
    try {
      const busy = await presync("delete", "disk", "--yes", "--store", store);
      assert.equal(busy.code, ExitCode.FAILURE);
      assert.match(busy.out, /STORE_BUSY/);
    } finally {
      await serving.close();
    }
    assert.equal((await presync("delete", "disk", "--yes", "--store", store)).code, 0);
    assert.deepEqual(JSON.parse((await presync("volumes", "--store", store, "--json")).out), {
      volumes: [],
    });
    assert.match((await presync("delete", "disk", "--yes", "--store", store)).out, /NOT_FOUND/);
    // Deleted means re-seeded from scratch: a new local sync starts at generation 1 again.
    await Deno.remove(`${image}.presync-state`, { recursive: true });
    assert.equal((await presync("sync", "--local", image, store, "--volume", "disk")).code, 0);
    const again = JSON.parse((await presync("volumes", "--store", store, "--json")).out);
    assert.equal(again.volumes[0].committedGeneration, 1);
  }));

seededTest("volumes and delete against a running serve: refused while the source is connected", (
  prng,
) =>
  withDir(async (root) => {
    const image = `${root}/source.img`;
    await writeImage(image, prng.fill(new Uint8Array(1 << 20)), 4 << 20);
    const cluster = await Cluster.start({ root, image });
    try {
      const control = [
        "--control",
        cluster.serveControl,
      ];
      const volumes = async () => {
        const listed = await presync("volumes", ...control, "--json");
        assert.equal(listed.code, ExitCode.OK, listed.out);
        return JSON.parse(listed.out).volumes as Record<string, unknown>[];
      };
      await cluster.waitFor("a committed generation", async () => {
        const [v] = await volumes();
        return Number(v?.committedGeneration) >= 1 && v.sourceConnected === true;
      });
      const busy = await presync("delete", "vm", "--yes", ...control);
      assert.equal(busy.code, ExitCode.FAILURE, busy.out);
      assert.match(busy.out, /source agent is connected.*STORE_BUSY/);
      assert.equal((await volumes()).length, 1, "still there");
      await cluster.agent.kill();
      await cluster.waitFor(
        "the source gone",
        async () => (await volumes())[0].sourceConnected === false,
      );
      const deleted = await presync("delete", "vm", "--yes", ...control, "--json");
      assert.equal(deleted.code, ExitCode.OK, deleted.out);
      assert.deepEqual(JSON.parse(deleted.out), { volume: "vm", deleted: true });
      assert.deepEqual(await volumes(), []);
      const status = await presync("status", ...control, "--json");
      assert.deepEqual(JSON.parse(status.out).volumes, [], "status reads the store, not a cache");
      assert.match(cluster.serve.output, /volume_deleted/);
    } finally {
      await cluster.stop();
    }
  }));
