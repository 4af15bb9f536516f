import assert from "node:assert/strict";
import { DelayController } from "./delay_controller.ts";

Deno.test("queuing delay above the target backs off; an empty queue brings the rate back", () => {
  const c = new DelayController(25);
  let now = 0;
  for (let i = 0; i < 10; i++) c.update(150, now += 1000);
  assert.equal(c.factor, 1);
  assert.equal(c.baseMs, 150);
  // Queues build: 100 ms above the base, once per RTT the rate drops by 30%.
  for (let i = 0; i < 5; i++) c.update(250, now += 300);
  assert.ok(c.factor < 0.2 && c.factor >= 0.05, `factor ${c.factor}`);
  const low = c.factor;
  for (let i = 0; i < 40; i++) c.update(152, now += 300);
  assert.ok(c.factor > low && c.factor <= 1);
  assert.equal(c.factor, 1);
});

Deno.test("the base forgets minima older than its window (a new route)", () => {
  const c = new DelayController(25, 60_000);
  c.update(50, 0);
  c.update(200, 90_000);
  assert.equal(c.baseMs, 200);
});
