import assert from "node:assert/strict";
import { PingTracker } from "./ping_tracker.ts";

Deno.test("ping tracker: a PONG resolves its PING and folds into the smoothed RTT", () => {
  const pings = new PingTracker();
  const seen: number[] = [];
  const keepalive = pings.nextId();
  const a = pings.start(0, (ms) => seen.push(ms));
  const b = pings.start(0, (ms) => seen.push(ms));
  pings.ack(keepalive, 5); // nobody waits: ignored
  pings.ack(a, 80);
  pings.ack(a, 90); // a duplicate PONG: ignored
  pings.ack(b, 160);
  assert.deepEqual(seen, [80, 160]);
  assert.equal(pings.srttMs, 80 + (160 - 80) / 8);
});
