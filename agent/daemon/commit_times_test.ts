import assert from "node:assert/strict";
import { CommitTimes } from "./commit_times.ts";

Deno.test("commit times: one slow commit moves neither the per-block median nor the quickest commit", () => {
  const times = new CommitTimes(5);
  assert.equal(times.secondsPerBlock, 0);
  assert.equal(times.quickestSeconds, 0);
  // 1000 blocks in 0.6 s at 0.1 s RTT: 0.5 ms per block; then one commit 4x as slow.
  times.add(1000, 0.6, 0.1);
  times.add(1000, 0.7, 0.1);
  times.add(500, 0.35, 0.1);
  times.add(1000, 2.1, 0.1);
  assert.ok(Math.abs(times.secondsPerBlock - 0.00055) < 1e-9, String(times.secondsPerBlock));
  assert.equal(times.quickestSeconds, 0.35);
  // Empty generations and unmeasured commits are not samples.
  times.add(0, 0.2, 0.1);
  times.add(10, 0, 0.1);
  assert.equal(times.quickestSeconds, 0.35);
});

Deno.test("commit times: only the last `window` commits count", () => {
  const times = new CommitTimes(2);
  times.add(100, 0.1, 0);
  times.add(100, 1, 0);
  times.add(100, 2, 0);
  assert.equal(times.quickestSeconds, 1);
  assert.ok(Math.abs(times.secondsPerBlock - 0.015) < 1e-12);
});
