import assert from "node:assert/strict";
import { needTools } from "../../fixtures/nbd_tools.ts";
import { promtoolCheck } from "../../fixtures/promtool.ts";
import { agentMetrics } from "../cli/cmd_agent.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { COMMIT_SECONDS_BOUNDS, Counters } from "./counters.ts";
import { renderMetrics } from "./metrics.ts";

function sample(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{"));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

function busyCounters(): Counters {
  const c = new Counters();
  c.connected();
  c.sent("db", 1000);
  c.sent("db", 500);
  c.generationCommitted("db", 12, 0.03);
  c.generationCommitted("db", 3, 4);
  c.received("db", 2000);
  c.blockReceived("db");
  c.linkCut();
  c.connected();
  c.error(new PresyncError(ErrorCode.LINK_DEAD, "silent"));
  c.error(new Error("boom"));
  return c;
}

Deno.test("counters add up per volume; reconnects are the sessions after the first", () => {
  const text = renderMetrics(busyCounters().families());
  assert.equal(sample(text, 'presync_sent_bytes_total{volume="db"}'), 1500);
  assert.equal(sample(text, 'presync_sent_blocks_total{volume="db"}'), 15);
  assert.equal(sample(text, 'presync_generations_committed_total{volume="db"}'), 2);
  assert.equal(sample(text, 'presync_received_bytes_total{volume="db"}'), 2000);
  assert.equal(sample(text, "presync_reconnects_total"), 1);
  assert.equal(sample(text, "presync_link_cuts_total"), 1);
  assert.equal(sample(text, 'presync_errors_total{code="LINK_DEAD"}'), 1);
  assert.equal(sample(text, 'presync_errors_total{code="UNKNOWN"}'), 1);
  assert.equal(
    sample(text, `presync_build_info{version="${VERSION}",deno="${Deno.version.deno}"}`),
    1,
  );
});

Deno.test("the commit histogram is cumulative, with +Inf, sum and count", async () => {
  const c = new Counters();
  await c.timeCommit("v", () => Promise.resolve());
  c.generationCommitted("v", 1, 0.3);
  c.generationCommitted("v", 1, 100);
  const text = renderMetrics(c.families());
  const bucket = (le: string) =>
    sample(text, `presync_generation_commit_seconds_bucket{volume="v",le="${le}"}`);
  assert.equal(bucket("0.25"), 1);
  assert.equal(bucket("0.5"), 2);
  assert.equal(bucket(String(COMMIT_SECONDS_BOUNDS.at(-1))), 2);
  assert.equal(bucket("+Inf"), 3);
  assert.equal(sample(text, 'presync_generation_commit_seconds_count{volume="v"}'), 3);
  assert.ok(sample(text, 'presync_generation_commit_seconds_sum{volume="v"}')! > 100.3);
});

Deno.test({
  name: "the agent's metrics pass promtool check metrics",
  ...(await needTools(["promtool"])),
  fn: async () => {
    const status = [{
      name: "db",
      state: "sending",
      committedGeneration: 4,
      rpoSeconds: 12.5,
      pendingBytes: 4096,
      generationBytes: 8192,
      generationPendingBytes: 2048,
      goodputBytesPerSecond: 1_250_000,
      rttMs: 150.2,
      predictedEvacuationSeconds: 3.2,
      prediction: null,
      paused: false,
      lastError: null,
      lastErrorCode: null,
      evacuation: null,
    }];
    const text = agentMetrics(status, busyCounters());
    assert.equal(sample(text, 'presync_rtt_seconds{volume="db"}'), 0.1502);
    const check = await promtoolCheck(text);
    assert.ok(check.ok, `${check.output}\n${text}`);
  },
});
