import assert from "node:assert/strict";
import { type ChaosTarget, killRun } from "../../fixtures/chaos.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { FLUSH_EVERY_BYTES } from "../sync/send_generation.ts";

const MiB = 1024 * 1024;
/** Random data synced per run: about 2 s on the chaos link. */
const DATA_BYTES = 24 * MiB;
/** Kill runs per test (the soak, `scripts/soak_chaos.ts`, runs many more). */
const RUNS = 2;
/** Framing on the link per data byte, with room to spare (measured: 0.2%). */
const FRAMING = 1.01;

async function inTemp<T>(fn: (root: string) => Promise<T>): Promise<T> {
  const root = await Deno.makeTempDir({ prefix: "presync-chaos-" });
  try {
    return await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function killRuns(
  prng: Parameters<Parameters<typeof seededTest>[1]>[0],
  target: ChaosTarget,
) {
  for (let run = 0; run < RUNS; run++) {
    const report = await inTemp((root) =>
      killRun(prng, { root, target, dataBytes: DATA_BYTES, maxKillAfterMs: 2000 })
    );
    const resent = report.bytesUp - DATA_BYTES * FRAMING;
    console.log(
      `kill -9 of ${target} ${report.killAfterMs} ms into the send (${report.stateAtKill}): ` +
        `replica at generation ${report.committedAtKill} intact, ` +
        `${(Math.max(0, resent) / MiB).toFixed(2)} MiB sent again`,
    );
    assert.ok(
      report.bytesUp <= (DATA_BYTES + FLUSH_EVERY_BYTES) * FRAMING,
      `run ${run}: ${report.bytesUp} bytes crossed the link for ${DATA_BYTES} of data: more ` +
        `than FLUSH_EVERY_BYTES (${FLUSH_EVERY_BYTES}) was sent again`,
    );
  }
}

seededTest(
  "chaos: kill -9 of serve at random instants: the replica is a committed generation, at most FLUSH_EVERY_BYTES is resent",
  (prng) => killRuns(prng, "serve"),
);

seededTest(
  "chaos: kill -9 of the agent at random instants: the replica is a committed generation, at most FLUSH_EVERY_BYTES is resent",
  (prng) => killRuns(prng, "agent"),
);
