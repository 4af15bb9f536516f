/**
 * Write latency through the agent's NBD tracker as deployed (issue 7): real `presync agent
 * --tracker nbd` and `presync serve` processes joined through the WAN emulator; a separate
 * client times 4 KiB random writes through the agent's NBD socket while the agent sends the
 * volume's first generation (the whole image), then with sending paused (idle). Two links:
 * unlimited loopback (the sync takes all the CPU it can) and 100 Mbit/s (a background sync
 * within a WAN link).
 *
 *     deno run -A scripts/bench_nbd_agent.ts [--size-mib 1024] [--writes 3000]
 *       [--links unlimited,100mbit] [--nice 0,10]
 *
 * `--nice` runs each link once per nice value of the agent process (10 is the systemd unit's
 * `Nice=`; the NBD tracker's thread puts itself back at 0 either way), side by side.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Cluster } from "../fixtures/cluster.ts";
import { runTool } from "../fixtures/nbd_tools.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "1024" },
    writes: { type: "string", default: "3000" },
    links: { type: "string", default: "unlimited,100mbit" },
    nice: { type: "string", default: "0" },
  },
});
const SIZE = Number(values["size-mib"]) * 2 ** 20;
const WRITES = Number(values.writes);
const LATENCY_CLIENT = new URL("./bench_nbd.ts", import.meta.url).pathname;

interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

async function latency(socket: string): Promise<Percentiles> {
  const out = await runTool(Deno.execPath(), [
    "run",
    "-A",
    LATENCY_CLIENT,
    "--latency-client",
    `${socket},${WRITES},vm`,
  ]);
  return JSON.parse(out.stdout.trim().split("\n").pop()!);
}

async function run(label: string, rateBitsPerSecond: number, agentNice: number) {
  const root = await Deno.makeTempDir({ prefix: "presync-bench-nbd-agent-" });
  let cluster: Cluster | null = null;
  try {
    const image = `${root}/disk.img`;
    const file = await Deno.open(image, { write: true, create: true });
    const piece = new Uint8Array(8 * 2 ** 20);
    for (let at = 0; at < SIZE; at += piece.length) {
      for (let i = 0; i < piece.length; i += 65536) {
        crypto.getRandomValues(piece.subarray(i, i + 65536));
      }
      await file.write(piece);
    }
    file.close();
    const socket = `${root}/vm.sock`;
    const link = { delayMs: 1, rateBitsPerSecond, queueBytes: 1 << 20 };
    cluster = await Cluster.start({
      root,
      image,
      wan: { up: link, down: link },
      agentArgs: ["--tracker", "nbd", "--nbd-listen", `unix:${socket}`],
      agentNice: agentNice === 0 ? undefined : agentNice,
      idleTimeoutSeconds: 15,
    });
    const c = cluster;
    await c.waitFor(
      "the first generation to start",
      async () => (await c.volumeStatus()).state === "sending",
    );
    const busy = await latency(socket);
    const status = await c.volumeStatus();
    const stillSending = status.state === "sending" && Number(status.committedGeneration) === 0;
    await c.control("POST", "/volumes/vm/pause");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const idle = await latency(socket);
    return { label, busy, idle, stillSending };
  } finally {
    await cluster?.stop();
    await Deno.remove(root, { recursive: true });
  }
}

const LINKS: Record<string, [string, number]> = {
  unlimited: ["unlimited loopback", 0],
  "100mbit": ["100 Mbit/s", 100e6],
};
const results = [];
for (const link of values.links.split(",")) {
  const [label, rate] = LINKS[link] ?? [];
  if (!label) throw new Error(`--links: unknown link ${link}; known: unlimited, 100mbit`);
  for (const nice of values.nice.split(",").map(Number)) {
    results.push(await run(`${label}, agent nice ${nice}`, rate, nice));
  }
}
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
console.log(
  `image ${SIZE / 2 ** 20} MiB random, ${WRITES} random 4 KiB writes per phase through ` +
    `the agent's NBD socket; load average at the end ${load}\n`,
);
console.log(
  "| link | idle p50 ms | idle p99 ms | sync p50 ms | sync p99 ms | p99 sync / idle |",
);
console.log("|---|---:|---:|---:|---:|---:|");
for (const r of results) {
  console.log(
    `| ${r.label}${r.stillSending ? "" : " (sync ended before the writes did)"} | ` +
      `${r.idle.p50.toFixed(3)} | ${r.idle.p99.toFixed(3)} | ${r.busy.p50.toFixed(3)} | ` +
      `${r.busy.p99.toFixed(3)} | ${(r.busy.p99 / r.idle.p99).toFixed(2)} |`,
  );
}
