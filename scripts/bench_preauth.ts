/**
 * Pre-authentication flood against `presync serve`: the serve process's memory (RSS) while
 * N idle unauthenticated connections are held open (with `--reopen-ms`, each one reopened
 * that long after the server closes it), and whether a legitimate agent, started during the flood, still
 * completes its first sync, with its goodput. Baseline: the same sync on the same server
 * with no flood, in the same run. Each pair runs twice, serve with the V8 flags the binary ships
 * with (`SHIPPED_V8_FLAGS`) and with V8's defaults, side by side. Prints a markdown table.
 *
 *   deno run -A scripts/bench_preauth.ts [--connections 3000] [--sources 4] [--mbytes 64]
 *     [--transport tls|tcp] [--reopen-ms MS]
 *
 * The flood comes from the loopback addresses 127.0.0.2 … (one per source, round robin),
 * the agent from 127.0.0.1, so per-source limits can be told from the global ones.
 *
 * @module
 */

import net from "node:net";
import { parseArgs } from "node:util";
import { writeNewKey } from "../agent/key_file.ts";
import { controlFetch, freePort, PresyncProcess, SHIPPED_V8_FLAGS } from "../fixtures/cluster.ts";

const MiB = 1024 * 1024;

/** The resident set of a process, in bytes, from /proc (VmRSS) and its peak (VmHWM). */
async function rss(pid: number): Promise<{ nowBytes: number; peakBytes: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]);
  return { nowBytes: kib("VmRSS") * 1024, peakBytes: kib("VmHWM") * 1024 };
}

/** CPU time a process has used so far (user + system, /proc/PID/stat), in seconds. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the command name (which may hold spaces) in parentheses; utime, stime are 14, 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticksPerSecond = 100; // USER_HZ on Linux
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/**
 * Opens `count` idle connections and holds them until `stop()`; with `reopenMs`, each one the
 * server closes is opened again after that long (a persistent attacker).
 */
class Flood {
  readonly #sockets = new Set<net.Socket>();
  readonly #reopenMs: number | undefined;
  #stopped = false;
  opened = 0;
  closedByServer = 0;

  constructor(port: number, count: number, sources: number, reopenMs?: number) {
    this.#reopenMs = reopenMs;
    for (let i = 0; i < count; i++) this.#open(port, `127.0.0.${2 + (i % sources)}`);
  }

  get open(): number {
    return this.#sockets.size;
  }

  #open(port: number, localAddress: string): void {
    if (this.#stopped) return;
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    this.#sockets.add(socket);
    socket.on("connect", () => this.opened++);
    socket.on("error", () => {});
    socket.on("close", () => {
      this.#sockets.delete(socket);
      if (this.#stopped) return;
      this.closedByServer++;
      if (this.#reopenMs !== undefined) {
        setTimeout(() => this.#open(port, localAddress), this.#reopenMs);
      }
    });
  }

  stop(): void {
    this.#stopped = true;
    for (const socket of this.#sockets) socket.destroy();
  }
}

async function writeImage(path: string, bytes: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(MiB);
  for (let written = 0; written < bytes; written += chunk.length) {
    for (let i = 0; i < chunk.length; i += 65536) {
      crypto.getRandomValues(chunk.subarray(i, i + 65536));
    }
    await file.write(chunk);
  }
  file.close();
}

interface Scenario {
  /** RSS of serve once listening, before anything connects, in bytes. */
  idleBytes: number;
  /** Highest RSS of serve seen while the flood (if any) and the sync ran, in bytes. */
  peakBytes: number;
  /** CPU time serve used from listening to the end of the run, seconds. */
  serveCpuSeconds: number;
  seconds: number;
  committed: boolean;
  flood?: Flood;
  serveLog: string;
}

/**
 * One fresh `presync serve`; with `flood`, N idle connections are opened first, then an
 * agent (from 127.0.0.1) runs until its first generation commits, then the flood is held 12 s
 * more (past the 10 s handshake deadline).
 */
async function scenario(
  root: string,
  name: string,
  image: string,
  transportArgs: string[],
  flood: { connections: number; sources: number; reopenMs?: number } | undefined,
  v8Flags: string,
): Promise<Scenario> {
  const servePort = freePort();
  const serve = new PresyncProcess([
    "serve",
    "--store",
    `${root}/store-${name}`,
    "--listen",
    `127.0.0.1:${servePort}`,
    "--key-file",
    `${root}/key`,
    "--control",
    `${root}/run/serve-${name}.sock`,
    "--log-format",
    "json",
    ...transportArgs,
  ], { v8Flags });
  let attack: Flood | undefined;
  try {
    while (!/"event":"listening"/.test(serve.output)) {
      if (serve.exited) throw new Error(`serve exited:\n${serve.output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const idle = await rss(serve.child.pid);
    const cpuAtIdle = await cpuSeconds(serve.child.pid);
    let peakBytes = idle.nowBytes;
    const sample = setInterval(async () => {
      peakBytes = Math.max(peakBytes, (await rss(serve.child.pid).catch(() => idle)).nowBytes);
    }, 100);
    if (flood) {
      attack = new Flood(servePort, flood.connections, flood.sources, flood.reopenMs);
      const deadline = performance.now() + 30_000;
      while (attack.opened < flood.connections && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    const sync = await syncOnce(root, name, image, servePort, transportArgs, 120_000);
    if (flood) await new Promise((resolve) => setTimeout(resolve, 12_000));
    clearInterval(sample);
    peakBytes = Math.max(peakBytes, (await rss(serve.child.pid)).nowBytes);
    const serveCpuSeconds = (await cpuSeconds(serve.child.pid)) - cpuAtIdle;
    return {
      idleBytes: idle.nowBytes,
      peakBytes,
      serveCpuSeconds,
      ...sync,
      flood: attack,
      serveLog: serve.output,
    };
  } finally {
    attack?.stop();
    await serve.kill("SIGTERM");
  }
}

interface SyncResult {
  seconds: number;
  committed: boolean;
}

/** Runs one agent for `volume` until its first generation commits (or `timeoutMs`). */
async function syncOnce(
  root: string,
  volume: string,
  image: string,
  servePort: number,
  transportArgs: string[],
  timeoutMs: number,
): Promise<SyncResult> {
  const control = `${root}/run/agent-${volume}.sock`;
  const started = performance.now();
  const agent = new PresyncProcess([
    "agent",
    "--volume",
    `${volume}=${image}`,
    "--to",
    `127.0.0.1:${servePort}`,
    "--key-file",
    `${root}/key`,
    "--state",
    `${root}/state-${volume}`,
    "--control",
    control,
    "--interval",
    "1",
    "--log-format",
    "json",
    ...transportArgs,
  ]);
  try {
    while (performance.now() - started < timeoutMs && !agent.exited) {
      const status = await controlFetch(control, "GET", "/status").then((r) => r.json()).catch(
        () => null,
      );
      const v = status?.volumes?.[0];
      if (v && Number(v.committedGeneration) >= 1) {
        return { seconds: (performance.now() - started) / 1000, committed: true };
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return { seconds: (performance.now() - started) / 1000, committed: false };
  } finally {
    await agent.kill("SIGTERM");
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      connections: { type: "string", default: "3000" },
      sources: { type: "string", default: "4" },
      mbytes: { type: "string", default: "64" },
      transport: { type: "string", default: "tls" },
      "reopen-ms": { type: "string" },
    },
  });
  const reopenMs = values["reopen-ms"] === undefined ? undefined : Number(values["reopen-ms"]);
  const connections = Number(values.connections);
  const sources = Number(values.sources);
  const bytes = Number(values.mbytes) * MiB;
  const transportArgs = ["--transport", values.transport!];
  const root = await Deno.makeTempDir({ prefix: "presync-bench-preauth-" });
  try {
    await writeNewKey(`${root}/key`);
    const image = `${root}/source.img`;
    await writeImage(image, bytes);
    const floodSpec = { connections, sources, reopenMs };
    const configs = [
      { label: `shipped (${SHIPPED_V8_FLAGS || "none"})`, v8Flags: SHIPPED_V8_FLAGS },
      { label: "V8 defaults", v8Flags: "" },
    ];
    const runs: { config: string; label: string; r: Scenario }[] = [];
    for (const { label, v8Flags } of configs) {
      const tag = label === "V8 defaults" ? "default" : "shipped";
      const baseline = await scenario(
        root,
        `baseline-${tag}`,
        image,
        transportArgs,
        undefined,
        v8Flags,
      );
      const flooded = await scenario(
        root,
        `flooded-${tag}`,
        image,
        transportArgs,
        floodSpec,
        v8Flags,
      );
      runs.push({ config: label, label: "no flood", r: baseline });
      runs.push({ config: label, label: "flood", r: flooded });
    }
    const mb = (n: number) => `${(n / MiB).toFixed(0)} MiB`;
    const mbit = (r: Scenario) => r.committed ? ((bytes * 8) / r.seconds / 1e6).toFixed(1) : "—";
    console.log(
      `\n${connections} idle pre-auth connections from ${sources} source addresses ` +
        `(127.0.0.2…)${
          reopenMs === undefined
            ? ", held"
            : `, each reopened ${reopenMs} ms after the server closes it`
        }; serve over ` +
        `${values.transport}; first sync of a ${values.mbytes} MiB random image over loopback ` +
        `(agent start to commit)\n`,
    );
    console.log(
      "| serve V8 flags | run | serve RSS idle | serve RSS peak | serve CPU s | sync committed | " +
        "seconds | goodput Mbit/s |",
    );
    console.log("|---|---|---:|---:|---:|---|---:|---:|");
    for (const { config, label, r } of runs) {
      console.log(
        `| ${config} | ${label} | ${mb(r.idleBytes)} | ${mb(r.peakBytes)} | ` +
          `${r.serveCpuSeconds.toFixed(1)} | ${r.committed} | ${r.seconds.toFixed(1)} | ` +
          `${mbit(r)} |`,
      );
    }
    for (const { config, label, r } of runs) {
      if (!r.flood) continue;
      const f = r.flood;
      const count = (event: string) =>
        (r.serveLog.match(new RegExp(`"event":"${event}"`, "g")) ?? []).length;
      console.log(
        `\n${config}, ${label}: ${f.opened} connections opened in total, ${f.closedByServer} ` +
          `closed by the server (refused at once or at the handshake deadline); serve log: ` +
          `${count("preauth_refused")} preauth_refused lines, ${count("log_suppressed")} ` +
          `log_suppressed lines`,
      );
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

if (import.meta.main) await main();
