/**
 * RSS of a sparse volume on the RBD back end (issue 18): a real `presync serve --store rbd:POOL`
 * and `presync agent` over loopback sync a sparse source image (`truncate`, default 1 TiB),
 * then commit a few incremental generations of random writes; the VmRSS of both processes is
 * sampled every 200 ms. The same image is then synced the same way into the directory back
 * end, in the same run, for comparison. Prints peak RSS of serve and agent, the time of each
 * generation and the bytes the store uses (the pool's `stored`, the directory's allocation).
 *
 *     deno run -A scripts/bench_rbd_sparse.ts [--size-gib 1024] [--generations 3]
 *       [--write-mib 4] [--seed-timeout-s 1800]
 *
 * The single-node test cluster of `scripts/ceph_dev.sh` is started or joined with a lease on
 * this process (its watchdog stops it when no lease holder is left); the benchmark's pool is
 * removed at the end and every process it starts is ended by its own PID.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { writeNewKey } from "../agent/key_file.ts";
import { cephCli, sharedCephCluster, uniqueName } from "../fixtures/ceph.ts";
import { agentArgs, controlFetch, freePort, PresyncProcess } from "../fixtures/cluster.ts";
import { Prng } from "../fixtures/prng.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-gib": { type: "string", default: "1024" },
    generations: { type: "string", default: "3" },
    "write-mib": { type: "string", default: "4" },
    "seed-timeout-s": { type: "string", default: "1800" },
  },
});
const MiB = 1 << 20;
const SIZE = Number(values["size-gib"]) * 1024 * MiB;
const GENERATIONS = Number(values.generations);
const WRITE_BYTES = Number(values["write-mib"]) * MiB;
const SEED_TIMEOUT_MS = Number(values["seed-timeout-s"]) * 1000;
const WRITE = 64 * 1024;
const SEED = 20261202;

/** Peak VmRSS (KiB) of a set of processes, sampled every 200 ms while running. */
class RssSampler {
  readonly peakKiB = new Map<string, number>();
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(processes: Record<string, PresyncProcess>) {
    const sample = () => {
      for (const [name, process] of Object.entries(processes)) {
        let status: string;
        try {
          status = Deno.readTextFileSync(`/proc/${process.child.pid}/status`);
        } catch {
          continue; // Exited.
        }
        const kib = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
        this.peakKiB.set(name, Math.max(this.peakKiB.get(name) ?? 0, kib));
      }
    };
    sample();
    this.#timer = setInterval(sample, 200);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

async function committedGeneration(control: string): Promise<number> {
  const response = await controlFetch(control, "GET", "/status");
  const status = await response.json() as { volumes: { committedGeneration: number }[] };
  return Number(status.volumes[0].committedGeneration);
}

/** Waits until `check` holds; throws with both processes' output after `timeoutMs`. */
async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  processes: PresyncProcess[],
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (processes.some((p) => p.exited)) break;
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(
    `timed out (or a process exited) waiting for ${what}\n` +
      processes.map((p) => p.output.slice(-4000)).join("\n---\n"),
  );
}

/** Writes `bytes` of random data in 64 KiB pieces at random aligned offsets of the image. */
async function randomWrites(image: string, prng: Prng, bytes: number): Promise<void> {
  using file = await Deno.open(image, { write: true });
  const buffer = new Uint8Array(WRITE);
  const slots = Math.floor(SIZE / WRITE);
  for (let done = 0; done < bytes; done += WRITE) {
    prng.fill(buffer);
    await file.seek(prng.int(slots) * WRITE, Deno.SeekMode.Start);
    let at = 0;
    while (at < buffer.length) at += await file.write(buffer.subarray(at));
  }
  await file.syncData();
}

interface Result {
  seedMs: number;
  generationMs: number[];
  serveKiB: number;
  agentKiB: number;
}

async function run(
  root: string,
  image: string,
  store: string[],
  prng: Prng,
): Promise<Result> {
  await Deno.mkdir(`${root}/run`, { recursive: true, mode: 0o700 });
  await writeNewKey(`${root}/key`);
  const port = freePort();
  const serveControl = `${root}/run/serve.sock`;
  const agentControl = `${root}/run/agent.sock`;
  const serve = new PresyncProcess([
    "serve",
    ...store,
    "--listen",
    `127.0.0.1:${port}`,
    "--key-file",
    `${root}/key`,
    "--control",
    serveControl,
    "--log-format",
    "json",
  ]);
  const processes = [serve];
  let agent: PresyncProcess | undefined;
  let sampler: RssSampler | undefined;
  try {
    await until(
      "serve's control socket",
      async () => {
        await (await controlFetch(serveControl, "GET", "/metrics")).body?.cancel();
        return true;
      },
      60_000,
      processes,
    );
    agent = new PresyncProcess(
      agentArgs(root, image, port, agentControl, ["--interval", "1", "--log-format", "json"]),
    );
    processes.push(agent);
    sampler = new RssSampler({ serve, agent });
    const start = performance.now();
    await until(
      "the first generation",
      async () => await committedGeneration(agentControl) >= 1,
      SEED_TIMEOUT_MS,
      processes,
    );
    const seedMs = performance.now() - start;
    const generationMs: number[] = [];
    for (let g = 2; g <= GENERATIONS + 1; g++) {
      const before = performance.now();
      await randomWrites(image, prng, WRITE_BYTES);
      await until(
        `generation ${g}`,
        async () => await committedGeneration(agentControl) >= g,
        300_000,
        processes,
      );
      generationMs.push(performance.now() - before);
    }
    sampler.stop();
    return {
      seedMs,
      generationMs,
      serveKiB: sampler.peakKiB.get("serve") ?? 0,
      agentKiB: sampler.peakKiB.get("agent") ?? 0,
    };
  } finally {
    sampler?.stop();
    await agent?.kill("SIGTERM");
    await serve.kill("SIGTERM");
  }
}

/** Bytes allocated under `path` (`du -sB1`: what a sparse directory store really uses). */
async function allocatedBytes(path: string): Promise<number> {
  const out = await new Deno.Command("du", { args: ["-sB1", path] }).output();
  return Number(new TextDecoder().decode(out.stdout).split("\t")[0]);
}

const ceph = await sharedCephCluster();
const pool = uniqueName("bench-sparse");
await cephCli(ceph, ["osd", "pool", "create", pool, "8", "8"]);
await cephCli(ceph, ["osd", "pool", "application", "enable", pool, "rbd"]);
const dir = await Deno.makeTempDir({ prefix: "presync-bench-sparse-" });
try {
  const image = `${dir}/source.raw`;
  const load = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  const results: Record<string, Result & { usedBytes: number }> = {};
  for (const kind of ["rbd", "dir"] as const) {
    // The same image for both back ends: a fresh sparse file and the same seeded writes.
    await Deno.remove(image).catch(() => {});
    await new Deno.Command("truncate", { args: ["-s", String(SIZE), image] }).output();
    const root = `${dir}/${kind}`;
    const store = kind === "rbd"
      ? [
        "--store",
        `rbd:${pool}?conf=${ceph.confPath}&id=${ceph.clientId}&keyring=${ceph.keyringPath}`,
        "--state",
        `${root}/serve-state`,
      ]
      : ["--store", `${root}/store`];
    console.error(`${kind}: load average ${load()} at start`);
    const result = await run(root, image, store, new Prng(SEED));
    const usedBytes = kind === "rbd"
      ? JSON.parse(await cephCli(ceph, ["df", "--format", "json"])).pools
        .find((p: { name: string }) => p.name === pool).stats.stored as number
      : await allocatedBytes(`${root}/store`);
    results[kind] = { ...result, usedBytes };
    console.error(`${kind}: done, load average ${load()}: ${JSON.stringify(results[kind])}`);
  }
  const f = (x: number) => x.toFixed(0);
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  console.log(
    `${SIZE / 1024 / MiB} GiB sparse volume; ${GENERATIONS} incremental generations of ` +
      `${WRITE_BYTES / MiB} MiB (64 KiB random writes, seed ${SEED}); load average ${load()}`,
  );
  console.log("| what | RBD back end | directory back end |");
  console.log("| --- | --- | --- |");
  const row = (what: string, cell: (r: Result & { usedBytes: number }) => string) =>
    console.log(`| ${what} | ${cell(results.rbd)} | ${cell(results.dir)} |`);
  row("first sync (seed)", (r) => s(r.seedMs));
  for (let g = 0; g < GENERATIONS; g++) {
    row(`generation ${g + 2} (write to committed)`, (r) => s(r.generationMs[g]));
  }
  row("peak RSS of serve", (r) => `${f(r.serveKiB / 1024)} MiB`);
  row("peak RSS of the agent", (r) => `${f(r.agentKiB / 1024)} MiB`);
  row("bytes the store uses", (r) => `${f(r.usedBytes / MiB)} MiB`);
} finally {
  await cephCli(ceph, ["osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"]);
  await Deno.remove(dir, { recursive: true });
}
