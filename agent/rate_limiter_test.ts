import assert from "node:assert/strict";
import { RateLimiter } from "./rate_limiter.ts";

Deno.test("the token bucket holds the average rate and allows one burst", () => {
  const limiter = new RateLimiter(1000, 500, 0);
  assert.equal(limiter.take(500, 0), 0);
  assert.equal(limiter.take(1000, 0), 1000);
  // After the wait the debt is paid; at 1000 B/s, 100 more bytes cost 100 ms.
  assert.equal(limiter.take(100, 1000), 100);
  const unlimited = new RateLimiter(0, 500, 0);
  assert.equal(unlimited.take(1e9, 0), 0);
  unlimited.setRate(10, 0);
  assert.ok(unlimited.take(1000, 0) > 0);
});
