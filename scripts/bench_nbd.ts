/**
 * NBD benchmark (issue 7): our NBD server vs `qemu-nbd` serving the same raw file, side by
 * side in one run, and the p99 latency of 4 KiB writes through the NBD tracker while a
 * background sync runs vs idle.
 *
 *     deno run -A scripts/bench_nbd.ts [--size-mib 256] [--ops 20000] [--latency-writes 3000]
 *       [--fio-seconds 5] [--fio-rounds 4] [--parts throughput,fio,zero,tracker]
 *
 * Throughput: `qemu-img bench` (4 KiB, queue depth 32, sequential) and `qemu-io` (4 KiB at
 * random aligned offsets, one at a time) over a Unix socket. Read latency: `fio` with its
 * libnbd engine, 4 KiB random reads at queue depth 1, total-latency percentiles; both servers
 * serve the image at once and the runs alternate (ours, qemu-nbd, ours, …), so load from
 * elsewhere on a shared machine falls on both alike; the table shows the median of the rounds. Zeroing:
 * one `qemu-io write -z -u` over the whole export (WRITE_ZEROES, may punch), its time and the
 * image's allocated bytes afterwards. Write latency through the tracker: a separate process
 * (this script with `--latency-client`) times each 4 KiB WRITE with our NBD client, while
 * this process samples its own event-loop delay (the sender's; the tracker, as in the agent,
 * serves the VM from a Worker of its own).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Bitmap } from "../agent/core/mod.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { FileExport, NbdClient, NbdServer, nbdUri } from "../agent/nbd/mod.ts";
import { SourceState } from "../agent/source/source_state.ts";
import { ReplicaStore } from "../agent/store/replica_store.ts";
import { DirectoryBackend } from "../plugins/store-directory/mod.ts";
import { sendGeneration } from "../agent/sync/send_generation.ts";
import { newVolumeIdentity } from "../agent/volume/volume_identity.ts";
import { createSparseImage, runTool, startQemuNbd } from "../fixtures/nbd_tools.ts";
import { WorkerNbdTracker } from "../plugins/tracker-nbd/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "256" },
    ops: { type: "string", default: "20000" },
    "latency-writes": { type: "string", default: "3000" },
    "latency-client": { type: "string" },
    "fio-seconds": { type: "string", default: "5" },
    "fio-rounds": { type: "string", default: "4" },
    parts: { type: "string", default: "throughput,fio,zero,tracker" },
  },
});
const PARTS = new Set(values.parts.split(","));

const SIZE = Number(values["size-mib"]) * 2 ** 20;
const OPS = Number(values.ops);
const RANDOM_OPS = Math.min(OPS, 5000);

if (values["latency-client"]) {
  // Child mode: time N random 4 KiB writes through the NBD socket, print the percentiles.
  const [path, count, name = "bench"] = values["latency-client"].split(",");
  const client = await NbdClient.connect({ transport: "unix", path }, name);
  const data = crypto.getRandomValues(new Uint8Array(4096));
  const times: number[] = [];
  for (let i = 0; i < Number(count); i++) {
    const offset = Math.floor(Math.random() * (client.sizeBytes / 4096)) * 4096;
    const t0 = performance.now();
    await client.write(offset, data);
    times.push(performance.now() - t0);
  }
  await client.close();
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
  console.log(JSON.stringify({ p50: at(0.5), p99: at(0.99), max: times[times.length - 1] }));
  Deno.exit(0);
}

function mibPerSecond(output: string, bytes: number): number {
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(output)?.[1]);
  return bytes / 2 ** 20 / seconds;
}

async function qemuImgBench(uri: string, write: boolean): Promise<number> {
  const args = ["bench", "-f", "raw", "-c", String(OPS), "-s", "4096", "-d", "32", "-t", "none"];
  if (write) args.push("-w");
  const out = await runTool("qemu-img", [...args, uri]);
  return mibPerSecond(out.stdout, OPS * 4096);
}

async function qemuIoRandom(uri: string, write: boolean): Promise<number> {
  const blocks = SIZE / 4096;
  const commands: string[] = [];
  for (let i = 0; i < RANDOM_OPS; i++) {
    const offset = Math.floor(Math.random() * blocks) * 4096;
    commands.push("-c", `${write ? "write" : "read"} ${offset} 4096`);
  }
  const t0 = performance.now();
  await runTool("qemu-io", ["-f", "raw", "-t", "none", ...commands, uri]);
  return (RANDOM_OPS * 4096) / 2 ** 20 / ((performance.now() - t0) / 1000);
}

async function throughput(uri: string): Promise<Record<string, number>> {
  return {
    "seq read 4K QD32 (qemu-img bench)": await qemuImgBench(uri, false),
    "seq write 4K QD32 (qemu-img bench)": await qemuImgBench(uri, true),
    "rand read 4K QD1 (qemu-io)": await qemuIoRandom(uri, false),
    "rand write 4K QD1 (qemu-io)": await qemuIoRandom(uri, true),
  };
}

interface Percentiles {
  p50: number;
  p99: number;
}

/** 4 KiB random reads at queue depth 1 through `uri` for `--fio-seconds`: latency percentiles. */
async function fioRandomRead(uri: string): Promise<Percentiles & { iops: number }> {
  const out = await runTool("fio", [
    "--name=randread",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=randread",
    "--bs=4k",
    "--iodepth=1",
    "--time_based",
    `--runtime=${values["fio-seconds"]}`,
    "--lat_percentiles=1",
    "--output-format=json",
  ]);
  // The nbd engine prints "fio: connected to NBD server" on stdout before the JSON.
  const read = JSON.parse(out.stdout.slice(out.stdout.indexOf("{"))).jobs[0].read;
  const pct = read.lat_ns.percentile as Record<string, number>;
  return { p50: pct["50.000000"] / 1e6, p99: pct["99.000000"] / 1e6, iops: read.iops };
}

/** Zeroes the whole export with one `write -z -u`: seconds, and the image's bytes after. */
async function zeroWhole(uri: string, image: string): Promise<{ seconds: number; mib: number }> {
  const t0 = performance.now();
  await runTool("qemu-io", ["-f", "raw", "-c", `write -z -u 0 ${SIZE}`, "-c", "flush", uri]);
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, mib: ((await Deno.stat(image)).blocks ?? 0) * 512 / 2 ** 20 };
}

/** Refills the image with data (before each server's turn, so both start alike). */
async function fill(image: string): Promise<void> {
  await runTool("qemu-io", ["-f", "raw", "-c", `write -P 0x3c 0 ${SIZE}`, image]);
}

/** The median of `values`. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** `--fio-rounds` alternating fio runs through `ours` and `qemu`: medians per server. */
async function fioRounds(ours: string, qemu: string) {
  const runs: Record<"ours" | "qemu", (Percentiles & { iops: number })[]> = { ours: [], qemu: [] };
  for (let round = 0; round < Number(values["fio-rounds"]); round++) {
    runs.ours.push(await fioRandomRead(ours));
    runs.qemu.push(await fioRandomRead(qemu));
  }
  const summary = (list: (Percentiles & { iops: number })[]) => ({
    p50: median(list.map((r) => r.p50)),
    p99: median(list.map((r) => r.p99)),
    iops: median(list.map((r) => r.iops)),
    p99s: list.map((r) => r.p99.toFixed(2)).join(" "),
  });
  return { ours: summary(runs.ours), qemu: summary(runs.qemu) };
}

/** One server's turn: every selected measurement through `uri`. */
async function measure(uri: string, image: string) {
  await fill(image);
  const tp = PARTS.has("throughput") ? await throughput(uri) : {};
  const zero = PARTS.has("zero") ? await zeroWhole(uri, image) : null;
  return { tp, zero };
}

/**
 * Samples this process's event-loop delay (how late a 1 ms timer fires) until `stop()`:
 * the wait a VM write served on this loop can get on top of its own work.
 */
function loopDelay(): { stop(): { p50: number; p99: number; max: number } } {
  const delays: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    delays.push(Math.max(0, now - last - 1));
    last = now;
  }, 1);
  return {
    stop() {
      clearInterval(timer);
      delays.sort((a, b) => a - b);
      const at = (q: number) => delays[Math.min(delays.length - 1, Math.floor(q * delays.length))];
      return { p50: at(0.5), p99: at(0.99), max: delays[delays.length - 1] };
    },
  };
}

async function latency(socket: string, writes: number) {
  const out = await runTool(Deno.execPath(), [
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    "--latency-client",
    `${socket},${writes}`,
  ]);
  return JSON.parse(out.stdout.trim().split("\n").pop()!) as { p50: number; p99: number };
}

const dir = await Deno.makeTempDir({ prefix: "presync-bench-nbd-" });
try {
  const image = `${dir}/disk.img`;
  await createSparseImage(image, SIZE);

  // 1. Throughput, read latency, zeroing: ours vs qemu-nbd on the same file.
  const ex = await FileExport.open(image, { name: "bench" });
  const server = new NbdServer([ex]);
  const ours = await server.listen({ transport: "unix", path: `${dir}/ours.sock` });
  const oursResult = await measure(nbdUri(ours, "bench"), image);
  await server.close();
  await ex.close();
  const qemu = await startQemuNbd(`${dir}/qemu.sock`, [
    "-f",
    "raw",
    "-x",
    "bench",
    "--cache=writeback",
    "--discard=unmap",
    image,
  ]);
  let qemuResult: Awaited<ReturnType<typeof measure>>;
  try {
    qemuResult = await measure(`nbd+unix:///bench?socket=${dir}/qemu.sock`, image);
  } finally {
    await qemu.stop();
  }
  await fill(image);

  // 2. Read latency: both servers up at once, fio runs alternating.
  let fio: Awaited<ReturnType<typeof fioRounds>> | null = null;
  if (PARTS.has("fio")) {
    const reader = await FileExport.open(image, { name: "bench", readOnly: true });
    const readServer = new NbdServer([reader]);
    const qemuReader = await startQemuNbd(`${dir}/qemu-ro.sock`, [
      "-f",
      "raw",
      "-x",
      "bench",
      "--read-only",
      "--cache=writeback",
      image,
    ]);
    try {
      const address = await readServer.listen({ transport: "unix", path: `${dir}/ours-ro.sock` });
      fio = await fioRounds(
        nbdUri(address, "bench"),
        `nbd+unix:///bench?socket=${dir}/qemu-ro.sock`,
      );
    } finally {
      await qemuReader.stop();
      await readServer.close();
      await reader.close();
    }
  }

  // 3. Write latency through the tracker, idle vs with a background sync running.
  const fs = new DenoFileSystem();
  const identity = newVolumeIdentity("bench", SIZE, 64 * 1024);
  const state = await SourceState.init(fs, `${dir}/state`, identity);
  const replica = await new ReplicaStore(new DirectoryBackend(fs, `${dir}/store`)).init(identity);
  using nothing = new Bitmap(SIZE / identity.blockSize);
  const tracker = await WorkerNbdTracker.create({
    imagePath: image,
    identity,
    stateDir: `${dir}/state`,
    listen: [{ transport: "unix", path: `${dir}/tracker.sock` }],
    initialDirty: nothing,
  });
  const writes = Number(values["latency-writes"]);
  let idle: Percentiles = { p50: NaN, p99: NaN };
  let busy: Percentiles = { p50: NaN, p99: NaN };
  let idleLoop = { p50: NaN, p99: NaN, max: NaN };
  let busyLoop = { p50: NaN, p99: NaN, max: NaN };
  let generations = 0;
  let bytesSynced = 0;
  if (PARTS.has("tracker")) {
    const idleSampler = loopDelay();
    idle = await latency(`${dir}/tracker.sock`, writes);
    idleLoop = idleSampler.stop();
    let stop = false;
    let first = true;
    const background = (async () => {
      while (!stop) {
        const cut = await tracker.cut();
        // The first generation is the whole image: a long send with copy-before-write.
        if (first) cut.dirty.setRange(0, cut.dirty.size);
        first = false;
        try {
          await state.recordCut(cut.dirty, Date.now());
          const report = await sendGeneration(state, cut, replica);
          bytesSynced += report.bytesSent;
          report.sent.free();
          generations++;
        } finally {
          await cut.release();
        }
      }
    })();
    const busySampler = loopDelay();
    busy = await latency(`${dir}/tracker.sock`, writes);
    busyLoop = busySampler.stop();
    stop = true;
    await background;
  }
  await tracker.close();
  replica.close();
  state.close();

  const rows = Object.entries(oursResult.tp).map(([name, value]) =>
    `| ${name} | ${value.toFixed(1)} | ${qemuResult.tp[name].toFixed(1)} | ${
      (value / qemuResult.tp[name]).toFixed(2)
    } |`
  );
  const ratio = (a: number, b: number) => (a / b).toFixed(2);
  const lines: string[] = [];
  if (fio) {
    const [o, q] = [fio.ours, fio.qemu];
    lines.push(
      `| fio 4K random read QD1 (median of ${values["fio-rounds"]} alternating runs of ` +
        `${values["fio-seconds"]} s) | presync | qemu-nbd | ratio |`,
      "|---|---:|---:|---:|",
      `| p50 ms | ${o.p50.toFixed(3)} | ${q.p50.toFixed(3)} | ${ratio(o.p50, q.p50)} |`,
      `| p99 ms | ${o.p99.toFixed(3)} | ${q.p99.toFixed(3)} | ${ratio(o.p99, q.p99)} |`,
      `| IOPS | ${o.iops.toFixed(0)} | ${q.iops.toFixed(0)} | ${ratio(o.iops, q.iops)} |`,
      `| p99 of each run, ms | ${o.p99s} | ${q.p99s} | |`,
      "",
    );
  }
  if (oursResult.zero && qemuResult.zero) {
    const [o, q] = [oursResult.zero, qemuResult.zero];
    lines.push(
      `| WRITE_ZEROES over the whole ${SIZE / 2 ** 20} MiB export | presync | ` +
        `qemu-nbd --discard=unmap | ratio |`,
      "|---|---:|---:|---:|",
      `| seconds | ${o.seconds.toFixed(3)} | ${q.seconds.toFixed(3)} | ` +
        `${ratio(o.seconds, q.seconds)} |`,
      `| image allocated afterwards, MiB | ${o.mib.toFixed(1)} | ${q.mib.toFixed(1)} | |`,
      "",
    );
  }
  console.log(
    `image ${SIZE / 2 ** 20} MiB raw, ${OPS} ops (qemu-img bench), ` +
      `${RANDOM_OPS} ops (qemu-io random), Unix socket\n`,
  );
  const load = await Deno.readTextFile("/proc/loadavg");
  console.log(`load average at the end: ${load.split(" ").slice(0, 3).join(" ")}\n`);
  if (rows.length > 0) {
    console.log("| workload | presync MiB/s | qemu-nbd MiB/s | ratio |\n|---|---:|---:|---:|");
    console.log(rows.join("\n") + "\n");
  }
  console.log(lines.join("\n"));
  if (PARTS.has("tracker")) {
    console.log(
      `\n| 4 KiB random write through the NBD tracker (${writes} writes) | p50 ms | p99 ms |\n` +
        `|---|---:|---:|\n` +
        `| idle | ${idle.p50.toFixed(3)} | ${idle.p99.toFixed(3)} |\n` +
        `| background sync running (${generations} generations, ` +
        `${(bytesSynced / 2 ** 20).toFixed(0)} MiB sent) | ${busy.p50.toFixed(3)} | ` +
        `${busy.p99.toFixed(3)} |\n| ratio busy / idle | ${(busy.p50 / idle.p50).toFixed(2)} | ` +
        `${(busy.p99 / idle.p99).toFixed(2)} |`,
    );
    console.log(
      `\n| event-loop delay of the tracker's process (1 ms timer) | p50 ms | p99 ms | max ms |\n` +
        `|---|---:|---:|---:|\n` +
        `| idle | ${idleLoop.p50.toFixed(3)} | ${idleLoop.p99.toFixed(3)} | ` +
        `${idleLoop.max.toFixed(3)} |\n` +
        `| background sync running | ${busyLoop.p50.toFixed(3)} | ${busyLoop.p99.toFixed(3)} | ` +
        `${busyLoop.max.toFixed(3)} |`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
