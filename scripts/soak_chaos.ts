/**
 * The chaos soak: the chaos suite's kill runs (`fixtures/chaos.ts`) with many more
 * iterations. Each run syncs an image of random data and kills `serve` or the agent with
 * SIGKILL at a random instant; the replica must equal a committed generation, and the bytes
 * sent again (the run's bytes on the link minus an uninterrupted run's, measured in the same
 * invocation) must stay within `FLUSH_EVERY_BYTES` of block data (with its framing on the
 * link: the bound scaled by the uninterrupted run's bytes per data byte).
 *
 * ```sh
 * deno run -A scripts/soak_chaos.ts [--runs 15] [--target serve|agent|both] [--data-mib 48]
 * ```
 *
 * Prints one JSON line per run and a summary; exits 1 when a run broke an invariant. The
 * seed comes from `PRESYNC_SEED` (printed, so a failing soak can be repeated exactly).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type ChaosTarget, killRun, uncutBytes } from "../fixtures/chaos.ts";
import { withSeed } from "../fixtures/prng.ts";
import { FLUSH_EVERY_BYTES } from "../agent/sync/send_generation.ts";

const MiB = 1024 * 1024;

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "15" },
    target: { type: "string", default: "both" },
    "data-mib": { type: "string", default: "48" },
  },
});
const runs = Number(values.runs);
const dataBytes = Number(values["data-mib"]) * MiB;
const targets: ChaosTarget[] = values.target === "both"
  ? ["serve", "agent"]
  : [values.target as ChaosTarget];

async function inTempDir<T>(fn: (root: string) => Promise<T>): Promise<T> {
  const root = await Deno.makeTempDir({ prefix: "presync-soak-" });
  try {
    return await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

let failed = false;
await withSeed(async (prng) => {
  console.log(JSON.stringify({ event: "soak", seed: prng.seed, runs, targets, dataBytes }));
  const baseline = await inTempDir((root) => uncutBytes(prng, root, dataBytes));
  // The bound counts block bytes; on the link each block also carries its framing.
  const boundBytes = Math.round(FLUSH_EVERY_BYTES * baseline / dataBytes);
  console.log(JSON.stringify({ event: "baseline", bytesUp: baseline, boundBytes }));
  // The latest kill: about the time the uninterrupted send takes at 100 Mbit/s.
  const maxKillAfterMs = Math.round(dataBytes * 8 / 100e6 * 1000);
  for (const target of targets) {
    const resent: number[] = [];
    for (let run = 0; run < runs; run++) {
      try {
        const report = await inTempDir((root) =>
          killRun(prng, { root, target, dataBytes, maxKillAfterMs })
        );
        const resentBytes = report.bytesUp - baseline;
        resent.push(resentBytes);
        const overBound = resentBytes > boundBytes;
        console.log(JSON.stringify({ event: "run", run, ...report, resentBytes, overBound }));
      } catch (err) {
        failed = true;
        console.log(JSON.stringify({ event: "run_failed", run, target, error: String(err) }));
      }
    }
    const over = resent.filter((b) => b > boundBytes).length;
    console.log(JSON.stringify({
      event: "summary",
      target,
      runs: resent.length,
      maxResentMiB: Math.round(Math.max(...resent) / MiB * 100) / 100,
      medianResentMiB: Math.round(resent.sort((a, b) => a - b)[resent.length >> 1] / MiB * 100) /
        100,
      overBound: over,
      boundMiB: FLUSH_EVERY_BYTES / MiB,
    }));
  }
});
if (failed) Deno.exit(1);
