import assert from "node:assert/strict";
import { LogThrottle } from "./log_throttle.ts";

Deno.test("log throttle: a flood of lines is cut to the budget per window, and the rest counted", () => {
  const throttle = new LogThrottle(3, 1000);
  const logged = Array.from({ length: 100 }, (_, i) => throttle.record("auth_failed", i).log);
  assert.equal(logged.filter(Boolean).length, 3);
  assert.ok(throttle.record("handshake_failed", 50).log, "keys have their own budget");
  assert.deepEqual(throttle.flush(999), [], "the window has not ended");
  assert.deepEqual(throttle.flush(1000), [{ key: "auth_failed", suppressed: 97 }]);
  assert.equal(throttle.holding, false);
});

Deno.test("log throttle: the first line of a new window carries the count of the last one", () => {
  const throttle = new LogThrottle(1, 1000);
  throttle.record("x", 0);
  throttle.record("x", 10);
  throttle.record("x", 20);
  assert.equal(throttle.holding, true);
  assert.deepEqual(throttle.record("x", 1500), { log: true, suppressedBefore: 2 });
  assert.equal(throttle.holding, false);
});
