import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { parseSchedule, scheduledRate } from "./rate_schedule.ts";

Deno.test("the first schedule rule whose window holds the time wins, across midnight too", () => {
  const rules = parseSchedule("08:00-20:00=10mbit,22:00-06:00=50mbit,*=0");
  assert.equal(scheduledRate(rules, 8 * 60, 1), 1.25e6);
  assert.equal(scheduledRate(rules, 19 * 60 + 59, 1), 1.25e6);
  assert.equal(scheduledRate(rules, 20 * 60, 1), Infinity);
  assert.equal(scheduledRate(rules, 23 * 60, 1), 6.25e6);
  assert.equal(scheduledRate(rules, 5 * 60, 1), 6.25e6);
  assert.equal(scheduledRate(parseSchedule("08:00-20:00=1mbit"), 21 * 60, 42), 42);
  assertThrowsCode(() => parseSchedule("8-20=1mbit"), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseSchedule("08:00-20:00"), "INVALID_ARGUMENT");
  assertThrowsCode(() => parseSchedule("08:00-20:00=20Mb"), "INVALID_ARGUMENT");
});
