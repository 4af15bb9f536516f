import assert from "node:assert/strict";
import { Backoff } from "./backoff.ts";

Deno.test("backoff doubles from 250 ms to at most 30 s, jittered ±50%, and starts over on reset", () => {
  const b = new Backoff();
  const middle = Array.from({ length: 12 }, () => b.next(0.5));
  assert.deepEqual(middle, [
    250,
    500,
    1000,
    2000,
    4000,
    8000,
    16000,
    30000,
    30000,
    30000,
    30000,
    30000,
  ]);
  b.reset();
  assert.equal(b.next(0), 125);
  assert.equal(b.next(0.999), 500 * 1.499);
});
