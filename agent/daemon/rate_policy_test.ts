import assert from "node:assert/strict";
import { RatePolicy } from "./rate_policy.ts";
import { parseSchedule } from "./rate_schedule.ts";

const at = (hh: number) => new Date(2026, 11, 1, hh, 30);

Deno.test("rate policy: the schedule's rate, else the configured one; evacuation lifts both", () => {
  const p = new RatePolicy({
    rate: 1e6,
    schedule: parseSchedule("08:00-20:00=100kbit"),
    delayTargetMs: 0,
  });
  assert.equal(p.rateAt(at(9), false), 12_500);
  assert.equal(p.rateAt(at(22), false), 1e6);
  assert.equal(p.rateAt(at(9), true), Infinity);
});

Deno.test("rate policy: queuing delay above the configured target slows background sync", () => {
  const p = new RatePolicy({ rate: 1e6, schedule: [], delayTargetMs: 50 });
  p.onRtt(10, 0);
  p.onRtt(40, 1000); // 30 ms of queuing: under a 50 ms target
  assert.equal(p.rateAt(at(9), false), 1e6);
  p.onRtt(100, 2000); // 90 ms over the base: over the target
  assert.ok(p.rateAt(at(9), false) < 1e6);
  assert.equal(p.rateAt(at(9), true), Infinity);
  // With the delay target off, RTT samples change nothing.
  const off = new RatePolicy({ rate: 1e6, schedule: [], delayTargetMs: 0 });
  off.onRtt(10, 0);
  off.onRtt(500, 1000);
  assert.equal(off.rateAt(at(9), false), 1e6);
});
