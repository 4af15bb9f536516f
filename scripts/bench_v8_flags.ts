/**
 * The first sync of a new volume over loopback (`presync agent` into `presync serve`, a
 * directory store), with two sets of V8 flags for both processes, runs interleaved (A B A B …)
 * so that the machine's load hits both alike: wall time to the first commit and both
 * processes' peak RSS (VmHWM). The image is half random, half zeros.
 *
 *     deno run -A scripts/bench_v8_flags.ts [--size-mib 2048] [--runs 3] \
 *       [--a --max-semi-space-size=1,--optimize-for-size] [--b SHIPPED]
 *
 * `--b` defaults to the flags the binary ships with (`deno.json`'s `compile` task).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  agentArgs,
  controlFetch,
  freePort,
  PresyncProcess,
  serveArgs,
  SHIPPED_V8_FLAGS,
} from "../fixtures/cluster.ts";
import { Prng } from "../fixtures/prng.ts";
import { writeNewKey } from "../agent/key_file.ts";
import { median } from "./_bench_timing.ts";

const { values } = parseArgs({
  options: {
    "size-mib": { type: "string", default: "2048" },
    runs: { type: "string", default: "3" },
    a: { type: "string", default: "--max-semi-space-size=1,--optimize-for-size" },
    b: { type: "string", default: SHIPPED_V8_FLAGS },
  },
});
const MiB = 1024 * 1024;
const size = Number(values["size-mib"]) * MiB;

/** VmHWM of `pid`, KiB (0 once it is gone). */
async function peakKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** One first sync of `image` with `v8Flags`; seconds to the first commit and peaks. */
async function seed(image: string, v8Flags: string) {
  const root = await Deno.makeTempDir({ prefix: "presync-v8-flags-" });
  const port = freePort();
  const control = `${root}/agent.sock`;
  await writeNewKey(`${root}/key`);
  const started = performance.now();
  const serve = new PresyncProcess(serveArgs(root, port, `${root}/serve.sock`), { v8Flags });
  const agent = new PresyncProcess(agentArgs(root, image, port, control, ["--interval", "1"]), {
    v8Flags,
  });
  const peaks = { serve: 0, agent: 0 };
  try {
    for (;;) {
      peaks.serve = Math.max(peaks.serve, await peakKiB(serve.child.pid));
      peaks.agent = Math.max(peaks.agent, await peakKiB(agent.child.pid));
      const status = await controlFetch(control, "GET", "/status")
        .then((r) => r.json()).catch(() => null);
      if (Number(status?.volumes?.[0]?.committedGeneration) >= 1) break;
      if (agent.exited || serve.exited) throw new Error(`${agent.output}\n${serve.output}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return { seconds: (performance.now() - started) / 1000, ...peaks };
  } finally {
    await agent.kill("SIGTERM");
    await serve.kill("SIGTERM");
    await Deno.remove(root, { recursive: true });
  }
}

const dir = await Deno.makeTempDir({ prefix: "presync-v8-flags-img-" });
try {
  const image = `${dir}/disk.img`;
  const data = new Uint8Array(64 * MiB);
  const prng = new Prng(7);
  const file = await Deno.open(image, { write: true, create: true });
  for (let at = 0; at < size / 2; at += data.length) await file.write(prng.fill(data));
  file.close();
  await Deno.truncate(image, size);
  const runs: Record<"a" | "b", { seconds: number; serve: number; agent: number }[]> = {
    a: [],
    b: [],
  };
  for (let i = 0; i < Number(values.runs); i++) {
    for (const side of i % 2 ? ["b", "a"] as const : ["a", "b"] as const) {
      const r = await seed(image, values[side]);
      runs[side].push(r);
      console.error(`${side} ${values[side]}: ${JSON.stringify(r)}`);
    }
  }
  const row = (side: "a" | "b") =>
    `| ${side.toUpperCase()} \`${values[side]}\` | ${
      median(runs[side].map((r) => r.seconds)).toFixed(2)
    } | ` +
    `${(median(runs[side].map((r) => r.agent)) / 1024).toFixed(0)} MiB | ` +
    `${(median(runs[side].map((r) => r.serve)) / 1024).toFixed(0)} MiB |`;
  console.log(
    `${values["size-mib"]} MiB image, ${values.runs} runs each, medians; load ` +
      (await Deno.readTextFile("/proc/loadavg")).trim(),
  );
  console.log(
    "| V8 flags | first sync s | agent peak | serve peak |\n| --- | ---: | ---: | ---: |",
  );
  console.log(row("a"));
  console.log(row("b"));
} finally {
  await Deno.remove(dir, { recursive: true });
}
