import assert from "node:assert/strict";
import { GoodputMeter } from "./goodput_meter.ts";

Deno.test("goodput: sends are averaged, newest at half weight", () => {
  const g = new GoodputMeter();
  assert.equal(g.bytesPerSecond, 0);
  g.record(10e6, 1, Infinity);
  assert.equal(g.bytesPerSecond, 10e6);
  g.record(20e6, 1, Infinity);
  assert.equal(g.bytesPerSecond, 15e6);
});

Deno.test("goodput: short sends are added up into one sample", () => {
  const g = new GoodputMeter();
  g.record(4e6, 0.4, Infinity);
  g.record(0, 2, Infinity);
  assert.equal(g.bytesPerSecond, 0, "0.4 s is too short to measure alone");
  g.record(2e6, 0.1, Infinity);
  assert.equal(g.bytesPerSecond, 0, "0.5 s is still too short");
  g.record(1e6, 0.5, Infinity);
  assert.equal(g.bytesPerSecond, 7e6, "three short sends: 7 MB in 1 s");
  g.record(3e6, 0.2, Infinity);
  assert.equal(g.bytesPerSecond, 7e6, "a new short sum starts");
});

Deno.test("goodput: sends held back by the rate limit say nothing of the link", () => {
  const g = new GoodputMeter();
  g.record(4e6, 0.4, 5e6);
  assert.equal(g.bytesPerSecond, 0);
  // 9 MB/s under a 10 MB/s limit: the limit was measured, not the link.
  g.record(9e6, 1, 10e6);
  assert.equal(g.bytesPerSecond, 0);
  // Well under the limit: the link is the bottleneck.
  g.record(5e6, 1, 10e6);
  assert.equal(g.bytesPerSecond, 5e6);
});
