/**
 * Evacuation with a generation in flight (issue 17 item 3), side by side: the same run for
 * each presync tree named (e.g. this one and `main` unpacked elsewhere), alternating, on the
 * same emulated link. A sparse image is seeded, a generation of `--inflight-mib` is cut, and
 * `--after-s` seconds into its send `evacuate` is asked for; a "VM" writing a 4 KiB page every
 * `--write-ms` into the first 16 MiB + that generation, from the start of its send (so it
 * re-dirties blocks staged and blocks still to be sent), is paused by the evacuate hook. Prints, per run,
 * the evacuation's seconds, bytes and generations committed (`evacuate`'s report).
 *
 *     deno run -A scripts/bench_fold.ts --tree /tmp/fold-base --tree . [--size-mib 512]
 *       [--inflight-mib 32] [--mbit 20] [--rtt-ms 50] [--after-s 4] [--write-ms 10] [--runs 2]
 */
import { parseArgs } from "node:util";
import { Prng } from "../fixtures/prng.ts";

const MiB = 1024 * 1024;
const { values } = parseArgs({
  options: {
    tree: { type: "string", multiple: true },
    "size-mib": { type: "string", default: "512" },
    "inflight-mib": { type: "string", default: "32" },
    mbit: { type: "string", default: "20" },
    "rtt-ms": { type: "string", default: "50" },
    "after-s": { type: "string", default: "4" },
    runs: { type: "string", default: "2" },
    "write-ms": { type: "string", default: "10" },
  },
});
const trees = (values.tree ?? ["."]).map((t) => new URL(`${Deno.realPathSync(t)}/`, "file://"));
const size = Number(values["size-mib"]) * MiB;
const inflight = Number(values["inflight-mib"]) * MiB;
const link = {
  delayMs: Number(values["rtt-ms"]) / 2,
  rateBitsPerSecond: Number(values.mbit) * 1e6,
  queueBytes: 256 * 1024,
};

async function writeAt(path: string, offset: number, bytes: Uint8Array) {
  const file = await Deno.open(path, { write: true });
  await file.seek(offset, Deno.SeekMode.Start);
  await file.write(bytes);
  file.close();
}

async function run(tree: URL, seed: number) {
  const { Cluster } = await import(new URL("fixtures/cluster.ts", tree).href);
  const { waitConverged } = await import(new URL("fixtures/chaos.ts", tree).href);
  const { pauseHook, writeUntilPaused } = await import(new URL("fixtures/vm_pause.ts", tree).href);
  const prng = new Prng(seed);
  const root = await Deno.makeTempDir({ prefix: "presync-bench-fold-" });
  try {
    const image = `${root}/source.img`;
    await Deno.writeFile(image, new Uint8Array(0));
    await Deno.truncate(image, size);
    await writeAt(image, 0, prng.fill(new Uint8Array(8 * MiB)));
    const cluster = await Cluster.start({
      root,
      image,
      wan: { up: link, down: link },
      agentArgs: ["--evacuate-hook", pauseHook(root)],
      idleTimeoutSeconds: 10,
    });
    try {
      await waitConverged(cluster, image);
      await writeAt(image, 16 * MiB, prng.fill(new Uint8Array(inflight)));
      await cluster.waitFor(
        "the generation in flight",
        async () => (await cluster.volumeStatus()).state === "sending",
      );
      const pages = (16 * MiB + inflight) / 4096;
      const vm = writeUntilPaused(
        root,
        image,
        prng,
        () => prng.int(pages),
        Number(values["write-ms"]),
      );
      await new Promise((resolve) => setTimeout(resolve, Number(values["after-s"]) * 1000));
      const reply = await cluster.control("POST", "/volumes/vm/evacuate");
      await vm;
      const r = reply.result as {
        seconds: number;
        bytesSent: number;
        verified: boolean;
        breakdown: { generations: number };
      };
      const equal = await Deno.readFile(`${root}/store/vm/image`).then(async (a) => {
        const b = await Deno.readFile(image);
        return a.length === b.length && a.every((v, i) => v === b[i]);
      });
      return {
        seconds: r.seconds,
        mib: r.bytesSent / MiB,
        generations: r.breakdown.generations,
        verified: r.verified,
        equal,
      };
    } finally {
      await cluster.stop();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

console.log(`load ${(await Deno.readTextFile("/proc/loadavg")).trim()}`);
for (let i = 0; i < Number(values.runs); i++) {
  for (const tree of trees) {
    const result = await run(tree, 1000 + i);
    console.log(
      JSON.stringify({ tree: tree.pathname, run: i, ...result }),
      `load ${(await Deno.readTextFile("/proc/loadavg")).trim()}`,
    );
  }
}
