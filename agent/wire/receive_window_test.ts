import assert from "node:assert/strict";
import { ReceiveWindow } from "./receive_window.ts";

Deno.test("receive window: credit goes back in quarters of the window", () => {
  const w = new ReceiveWindow(1000);
  w.receive(600, "s");
  assert.equal(w.consume(200), 0);
  assert.equal(w.consume(100), 300);
  assert.equal(w.allowance, 700);
});

Deno.test("receive window: a shrink grants nothing until the peer holds less than the new size", () => {
  const w = new ReceiveWindow(1000);
  w.receive(200, "s");
  assert.equal(w.resize(400), 0);
  assert.equal(w.allowance, 800, "what the peer holds is not taken back");
  assert.equal(w.consume(200), 0, "the peer still holds twice the new window");
  w.receive(700, "s");
  assert.equal(w.consume(400), 300, "granted up to the new size only");
  assert.equal(w.allowance, 400);
  assert.throws(() => w.receive(401, "s"), /flow control/);
});

Deno.test("receive window: growing grants the difference at once, and never deadlocks after a shrink", () => {
  const w = new ReceiveWindow(1000);
  w.resize(100);
  w.receive(1000, "s"); // the peer spends what it held
  assert.equal(w.allowance, 0);
  // Everything consumed: the peer must get credit back (no deadlock).
  assert.ok(w.consume(1000) > 0);
  assert.equal(w.allowance, 100);
  assert.equal(w.resize(1000), 900);
  assert.equal(w.allowance, 1000);
});
