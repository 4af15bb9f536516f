import assert from "node:assert/strict";
import { Cluster, jsonLines, type PresyncProcess } from "../../fixtures/cluster.ts";
import { needTools, runTool } from "../../fixtures/nbd_tools.ts";
import { type Prng, withSeed } from "../../fixtures/prng.ts";
import { hashFile } from "../../fixtures/workload.ts";

const MiB = 1024 * 1024;
const tools = await needTools(["nbdcopy", "qemu-io"]);

/** Writes `bytes` of random data at `offset` of the image. */
async function scribble(image: string, prng: Prng, offset: number, bytes: number) {
  const file = await Deno.open(image, { write: true });
  await file.seek(offset, Deno.SeekMode.Start);
  await file.write(prng.fill(new Uint8Array(bytes)));
  file.close();
}

/**
 * A synced volume whose next generation will be the evacuation's: a 16 MiB image with 2 MiB
 * of data synced (generation 1) on a 16 Mbit/s link, the agent restarted without background
 * cuts, then `final` (offset, bytes) pieces of random data written. Returns the cluster and
 * the hash the replica must end with.
 */
async function readyToEvacuate(
  root: string,
  prng: Prng,
  final: [number, number][],
): Promise<{ cluster: Cluster; image: string; expected: string }> {
  const image = `${root}/source.img`;
  await Deno.writeFile(image, new Uint8Array(0));
  await Deno.truncate(image, 16 * MiB);
  await scribble(image, prng, 0, 2 * MiB);
  // 16 Mbit/s: a final generation of 6–8 MiB of random data takes 3–4 s to arrive.
  const link = { delayMs: 20, rateBitsPerSecond: 16e6, queueBytes: 128 * 1024 };
  const cluster = await Cluster.start({ root, image, wan: { up: link, down: link } });
  try {
    await cluster.waitFor(
      "generation 1",
      async () => Number((await cluster.volumeStatus()).committedGeneration) >= 1,
    );
    // No more background cuts: the next generation is the evacuation's.
    await cluster.agent.kill("SIGTERM");
    cluster.startAgent(["--interval", "3600"]);
    await cluster.waitFor("the agent", async () => (await cluster.volumeStatus()).state === "idle");
    for (const [offset, bytes] of final) await scribble(image, prng, offset, bytes);
    return { cluster, image, expected: await hashFile(image) };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

/**
 * A full evacuation with postcopy: the destination starts serving the volume as soon as the
 * final generation begins; a reader that copies the whole disk meanwhile gets the source's
 * bytes as of the final cut (blocks still on their way are fetched on demand), and the
 * commit confirms every block served.
 */
async function postcopyRun(prng: Prng, writable: boolean): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-postcopy-" });
  let cluster: Cluster | null = null;
  let exporter: PresyncProcess | null = null;
  try {
    const ready = await readyToEvacuate(root, prng, [[5 * MiB, 6 * MiB], [15 * MiB, 4096]]);
    cluster = ready.cluster;
    const { image, expected } = ready;
    const c = cluster;

    const socket = `${root}/vm.sock`;
    exporter = c.startPostcopyExport(socket, writable ? ["--writable"] : []);
    const ex = exporter;
    await c.waitFor("the export to wait", () => Promise.resolve(jsonLines(ex).length > 0));
    assert.equal(jsonLines(ex)[0].event, "waiting");
    const evacuation = c.control("POST", "/volumes/vm/evacuate");
    await c.waitFor(
      "the export to serve",
      () => Promise.resolve(jsonLines(ex).some((e) => e.event === "serving")),
    );
    const serving = jsonLines(ex).find((e) => e.event === "serving")!;
    assert.equal(serving.postcopy, true, JSON.stringify(serving));
    const uri = `nbd+unix:///vm?socket=${socket}`;
    await runTool("nbdcopy", [uri, `${root}/copy.img`]);
    assert.equal(await hashFile(`${root}/copy.img`), expected, "the VM saw other bytes");
    if (writable) {
      await runTool("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 5242880 65536", uri]);
    }

    const report = await evacuation;
    assert.equal(report.ok, true, JSON.stringify(report));
    await c.waitFor(
      "the commit event",
      () => Promise.resolve(jsonLines(ex).some((e) => e.event === "committed")),
    );
    const committed = jsonLines(ex).find((e) => e.event === "committed")!;
    assert.ok(Number(committed.fetchedBlocks) > 0, JSON.stringify(committed));
    assert.equal(committed.differing, 0);
    assert.equal(await hashFile(`${root}/store/vm/image`), expected);
    // After the commit the export reads the replica: still the same disk.
    await runTool("nbdcopy", [uri, `${root}/copy2.img`]);
    if (!writable) {
      assert.equal(await hashFile(`${root}/copy2.img`), expected);
      // While exported, the replica must not change under the VM: a source that goes on
      // syncing is refused, until the export stops.
      await scribble(image, prng, 0, 65536);
      await c.agent.kill("SIGTERM");
      c.startAgent();
      await c.waitFor("the refusal", () => Promise.resolve(/VOLUME_EXPORTED/.test(c.agent.output)));
      assert.equal(await hashFile(`${root}/store/vm/image`), expected);
      await ex.kill("SIGTERM");
      const resumed = await hashFile(image);
      await c.waitFor(
        "the sync to go on after the export",
        async () => await hashFile(`${root}/store/vm/image`) === resumed,
      );
    } else {
      await runTool("qemu-io", ["-f", "raw", "-c", "read -P 0x5a 5242880 65536", uri]);
      assert.equal(await hashFile(`${root}/store/vm/image`), expected, "the overlay leaked");
    }
  } finally {
    if (exporter) await exporter.kill("SIGTERM");
    await cluster?.stop();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test({
  name: "postcopy: a read-only export during the evacuation serves the final cut's bytes",
  ...tools,
  fn: () => withSeed((prng) => postcopyRun(prng, false)),
});

Deno.test({
  name: "postcopy: a writable export keeps the VM's writes in the overlay, never the replica",
  ...tools,
  fn: () => withSeed((prng) => postcopyRun(prng, true)),
});

Deno.test({
  name: "postcopy: the source restarts mid-evacuation; the export keeps serving and commits",
  ...tools,
  fn: () =>
    withSeed(async (prng) => {
      const root = await Deno.makeTempDir({ prefix: "presync-postcopy-" });
      let cluster: Cluster | null = null;
      let exporter: PresyncProcess | null = null;
      try {
        const ready = await readyToEvacuate(root, prng, [[4 * MiB, 8 * MiB]]);
        cluster = ready.cluster;
        const { expected } = ready;
        const c = cluster;
        const socket = `${root}/vm.sock`;
        exporter = c.startPostcopyExport(socket);
        const ex = exporter;
        await c.waitFor("the export to wait", () => Promise.resolve(jsonLines(ex).length > 0));
        c.control("POST", "/volumes/vm/evacuate").catch(() => {});
        await c.waitFor("the export to serve", () =>
          Promise.resolve(jsonLines(ex).some((e) => e.event === "serving")));
        // The source dies with the final generation half sent, and comes back without knowing
        // it was evacuating: it resends that generation as an ordinary one.
        await c.agent.kill("SIGKILL");
        c.startAgent(["--interval", "3600"]);
        const uri = `nbd+unix:///vm?socket=${socket}`;
        await runTool("nbdcopy", [uri, `${root}/copy.img`]);
        assert.equal(await hashFile(`${root}/copy.img`), expected, "the VM saw other bytes");
        await c.waitFor("the commit event", () =>
          Promise.resolve(
            jsonLines(ex).some((e) =>
              e.event === "committed"
            ),
          ));
        const committed = jsonLines(ex).find((e) => e.event === "committed")!;
        assert.equal(committed.differing, 0);
        assert.equal(await hashFile(`${root}/store/vm/image`), expected);
      } finally {
        if (exporter) await exporter.kill("SIGTERM");
        await cluster?.stop();
        await Deno.remove(root, { recursive: true });
      }
    }),
});

Deno.test({
  name: "postcopy: an early export completes the handshake before the evacuation, " +
    "serves the committed replica and holds writes until the switchover, then the final cut",
  ...tools,
  fn: () =>
    withSeed(async (prng) => {
      const root = await Deno.makeTempDir({ prefix: "presync-postcopy-" });
      let cluster: Cluster | null = null;
      let exporter: PresyncProcess | null = null;
      try {
        const ready = await readyToEvacuate(root, prng, [[5 * MiB, 6 * MiB], [15 * MiB, 4096]]);
        cluster = ready.cluster;
        const { expected } = ready;
        const c = cluster;
        const replicaBefore = await hashFile(`${root}/store/vm/image`);
        assert.notEqual(replicaBefore, expected);
        const socket = `${root}/vm.sock`;
        exporter = c.startPostcopyExport(socket, ["--writable", "--early"]);
        const ex = exporter;
        await c.waitFor(
          "the early socket",
          () => Promise.resolve(jsonLines(ex).some((e) => e.event === "listening")),
        );
        const uri = `nbd+unix:///vm?socket=${socket}`;
        // What QEMU does at start-up with -incoming: connect, negotiate, learn the size.
        // (nbdinfo without --size also reads the first sectors to guess the content.)
        const size = await runTool("timeout", ["30", "nbdinfo", "--size", uri]);
        assert.equal(Number(size.stdout.trim()), 16 * MiB);
        await runTool("timeout", ["30", "nbdinfo", "--can", "write", uri]);
        // Before the switchover reads see the committed replica (QEMU probes sector 0 as it
        // starts), and a write is held: nothing is written to a disk that is not the final one.
        await runTool("timeout", ["60", "nbdcopy", uri, `${root}/before.img`]);
        assert.equal(await hashFile(`${root}/before.img`), replicaBefore);
        let written = false;
        const write = runTool("timeout", [
          "60",
          "qemu-io",
          "-f",
          "raw",
          "-c",
          "write -P 0x5a 5242880 65536",
          uri,
        ]).then((r) => {
          written = true;
          return r;
        });
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal(written, false, "a write was taken before the final generation existed");
        assert.equal(jsonLines(ex).some((e) => e.event === "serving"), false);
        const report = await c.control("POST", "/volumes/vm/evacuate");
        assert.equal(report.ok, true, JSON.stringify(report));
        await write;
        // After the switchover: the final cut, with the held write on top, in the overlay.
        await runTool("timeout", ["60", "nbdcopy", uri, `${root}/copy.img`]);
        const want = await Deno.readFile(ready.image);
        want.fill(0x5a, 5242880, 5242880 + 65536);
        assert.ok(
          (await Deno.readFile(`${root}/copy.img`)).every((byte, i) => byte === want[i]),
          "the VM saw other bytes than the final cut and its own write",
        );
        const serving = jsonLines(ex).find((e) => e.event === "serving")!;
        assert.deepEqual(serving.uris, jsonLines(ex).find((e) => e.event === "listening")!.uris);
        await runTool("timeout", [
          "30",
          "qemu-io",
          "-f",
          "raw",
          "-c",
          "read -P 0x5a 5242880 65536",
          uri,
        ]);
        await c.waitFor(
          "the commit event",
          () => Promise.resolve(jsonLines(ex).some((e) => e.event === "committed")),
        );
        assert.equal(jsonLines(ex).find((e) => e.event === "committed")!.differing, 0);
        assert.equal(await hashFile(`${root}/store/vm/image`), expected, "the overlay leaked");
      } finally {
        if (exporter) await exporter.kill("SIGTERM");
        await cluster?.stop();
        await Deno.remove(root, { recursive: true });
      }
    }),
});

Deno.test({
  name: "postcopy: an early export stopped before any evacuation fails its held writes",
  ...tools,
  fn: () =>
    withSeed(async (prng) => {
      const root = await Deno.makeTempDir({ prefix: "presync-postcopy-" });
      let cluster: Cluster | null = null;
      let exporter: PresyncProcess | null = null;
      try {
        const ready = await readyToEvacuate(root, prng, [[5 * MiB, 1 * MiB]]);
        cluster = ready.cluster;
        const c = cluster;
        const socket = `${root}/vm.sock`;
        exporter = c.startPostcopyExport(socket, ["--early", "--writable"]);
        const ex = exporter;
        await c.waitFor(
          "the early socket",
          () => Promise.resolve(jsonLines(ex).some((e) => e.event === "listening")),
        );
        const uri = `nbd+unix:///vm?socket=${socket}`;
        const read = runTool(
          "timeout",
          ["60", "qemu-io", "-f", "raw", "-c", "write 0 4096", uri],
          -1,
        );
        await new Promise((r) => setTimeout(r, 500));
        await ex.kill("SIGTERM");
        exporter = null;
        const result = await read;
        assert.match(result.stdout + result.stderr, /error|failed/i, JSON.stringify(result));
        // The source goes on syncing: nothing holds the volume any more.
        assert.equal((await c.volumeStatus()).state !== "parked", true);
      } finally {
        if (exporter) await exporter.kill("SIGTERM");
        await cluster?.stop();
        await Deno.remove(root, { recursive: true });
      }
    }),
});
