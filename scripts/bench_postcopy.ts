/**
 * Postcopy benchmark (issue 7): how soon a VM can use its disk at the destination during an
 * evacuation, with `presync export --postcopy` vs waiting for the final generation to commit.
 *
 * Real `presync serve` / `presync agent` processes through the WAN emulator. After the first
 * generation, the "VM" writes `--final-mib` of random data (the final generation), then the
 * evacuation starts. Measured from the evacuate request: when the export starts serving,
 * how long a "boot" takes (reading `--boot-mib` of the disk in 64 KiB pieces, half of them in
 * blocks still on their way, at random), and when the evacuation completes (the moment a
 * plain `presync export` could start).
 *
 *     deno run -A scripts/bench_postcopy.ts [--final-mib 32] [--boot-mib 8] [--rate-mbit 20] [--delay-ms 125]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Cluster, jsonLines, type PresyncProcess } from "../fixtures/cluster.ts";
import { NbdClient } from "../agent/nbd/mod.ts";
import { Prng } from "../fixtures/prng.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "final-mib": { type: "string", default: "32" },
    "boot-mib": { type: "string", default: "8" },
    "rate-mbit": { type: "string", default: "20" },
    "delay-ms": { type: "string", default: "125" },
  },
});
const MiB = 2 ** 20;
const FINAL = Number(values["final-mib"]) * MiB;
const BOOT = Number(values["boot-mib"]) * MiB;
const SIZE = FINAL * 4;
const PIECE = 64 * 1024;

const root = await Deno.makeTempDir({ prefix: "presync-bench-postcopy-" });
let cluster: Cluster | null = null;
let exporter: PresyncProcess | null = null;
try {
  const prng = new Prng(7);
  const image = `${root}/disk.img`;
  const file = await Deno.open(image, { write: true, create: true });
  await file.truncate(SIZE);
  await file.write(prng.fill(new Uint8Array(FINAL))); // generation 1: the first quarter
  file.close();
  const link = {
    delayMs: Number(values["delay-ms"]),
    rateBitsPerSecond: Number(values["rate-mbit"]) * 1e6,
    queueBytes: 512 * 1024,
  };
  cluster = await Cluster.start({
    root,
    image,
    wan: { up: link, down: link },
    idleTimeoutSeconds: 15,
  });
  const c = cluster;
  await c.waitFor(
    "generation 1",
    async () => Number((await c.volumeStatus()).committedGeneration) >= 1,
    600_000,
  );
  await c.agent.kill("SIGTERM");
  c.startAgent(["--interval", "3600"]);
  await c.waitFor("the agent", async () => (await c.volumeStatus()).state === "idle");
  // The final generation: the second quarter of the disk, random.
  const vm = await Deno.open(image, { write: true });
  await vm.seek(2 * FINAL, Deno.SeekMode.Start);
  await vm.write(prng.fill(new Uint8Array(FINAL)));
  vm.close();

  const socket = `${root}/vm.sock`;
  exporter = c.startPostcopyExport(socket, ["--writable"]);
  const ex = exporter;
  const events = () => jsonLines(ex);
  await c.waitFor("the export to wait", () => Promise.resolve(events().length > 0));
  const t0 = performance.now();
  let evacuatedAt = 0;
  const evacuation = c.control("POST", "/volumes/vm/evacuate").then((r) => {
    evacuatedAt = performance.now() - t0;
    return r;
  });
  await c.waitFor(
    "the export to serve",
    () => Promise.resolve(events().some((e) => e.event === "serving")),
    600_000,
  );
  const servingAt = performance.now() - t0;
  // "Boot": random 64 KiB reads, each in the final generation's blocks or elsewhere at random,
  // from eight connections at once (a guest's I/O queue).
  const offsets = Array.from(
    { length: BOOT / PIECE },
    (_, i) => (i % 2 === 0 ? 2 * FINAL : 0) + prng.int(FINAL / PIECE) * PIECE,
  );
  const boot = async () => {
    const started = performance.now();
    let firstMs = 0;
    await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(async (lane) => {
      const client = await NbdClient.connect({ transport: "unix", path: socket }, "vm");
      for (let i = lane; i < offsets.length; i += 8) {
        await client.read(offsets[i], PIECE);
        if (firstMs === 0) firstMs = performance.now() - started;
      }
      await client.close();
    }));
    return { firstMs, totalMs: performance.now() - started };
  };
  const postcopyBoot = await boot();
  const bootedAt = performance.now() - t0;
  const report = await evacuation;
  if (report.ok !== true) throw new Error(JSON.stringify(report));
  await c.waitFor(
    "the commit event",
    () => Promise.resolve(events().some((e) => e.event === "committed")),
    600_000,
  );
  const committed = events().find((e) => e.event === "committed")!;
  // The same boot once everything is local: what a VM started after the commit would take.
  const localBoot = await boot();
  console.log(
    `final generation ${FINAL / MiB} MiB random, link ${values["rate-mbit"]} Mbit/s, ` +
      `${2 * Number(values["delay-ms"])} ms RTT; boot = ${
        BOOT / MiB
      } MiB in 64 KiB random reads, ` +
      `about half in the final generation, 8 at a time\n`,
  );
  const f = (ms: number) => (ms / 1000).toFixed(2);
  console.log("| from the evacuate request | seconds |\n|---|---:|");
  console.log(`| postcopy export serving | ${f(servingAt)} |`);
  console.log(`| first boot read answered | ${f(servingAt + postcopyBoot.firstMs)} |`);
  console.log(
    `| **boot done with postcopy** | **${f(bootedAt)}** (${f(postcopyBoot.totalMs)} s of reads) |`,
  );
  console.log(`| evacuation committed | ${f(evacuatedAt)} |`);
  console.log(
    `| **boot done when started after the commit** | **${f(evacuatedAt + localBoot.totalMs)}** (${
      f(localBoot.totalMs)
    } s of reads) |`,
  );
  console.log(
    `\nfetched on demand: ${committed.fetchedBlocks} blocks in ${committed.fetches} requests; ` +
      `read from the staging area: ${committed.stagedBlocks} blocks; ` +
      `blocks served that differ from the commit: ${committed.differing}`,
  );
} finally {
  if (exporter) await exporter.kill("SIGTERM");
  await cluster?.stop();
  await Deno.remove(root, { recursive: true });
}
