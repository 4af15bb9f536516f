import assert from "node:assert/strict";
import { parseBenchArgs, runBenchmark } from "./bench_evacuate.ts";

const HAVE_TOOLS = ["zstd", "rsync", "cmp"].every((tool) =>
  new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null" }).outputSync()
    .success
);

Deno.test({
  name: "bench_evacuate --quick: every contender ends with a replica equal to the source",
  ignore: !HAVE_TOOLS,
  fn: async () => {
    // Correctness only: timings on a shared 2-core machine are not asserted.
    const { options } = parseBenchArgs(["--quick", "--presync", "8", "--cut-seconds", "1"]);
    const lines: string[] = [];
    const results = await runBenchmark({ ...options, log: (line) => lines.push(line) });
    assert.equal(results.length, 1, lines.join("\n"));
    const [r] = results;
    assert.equal(r.presync.report.verified, true, "presync's Merkle verification failed");
    assert.deepStrictEqual(
      r.equal,
      { presync: true, rsync: true, full: true },
      `a replica differs from the source\n${lines.join("\n")}`,
    );
    assert.ok(r.presync.samples.length > 0, "status was never sampled during pre-sync");
    assert.ok(r.diff.pages > 0, "the workload changed nothing before the evacuation");
    const prediction = r.presync.before.prediction as Record<string, unknown> | null;
    assert.ok(prediction, "status made no prediction before evacuate");
    assert.ok(
      ["scan", "scan_write_rate"].includes(String(prediction.freshSource)),
      `the scan tracker's new writes come from its passes: ${prediction.freshSource}`,
    );
    const b = r.presync.report.breakdown;
    assert.equal(b.wireBytes, r.presync.report.bytesSent);
    assert.ok(b.generations >= 1 && b.blocks > 0, JSON.stringify(b));
  },
});
