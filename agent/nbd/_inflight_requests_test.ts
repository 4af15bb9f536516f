import assert from "node:assert/strict";
import { InflightRequests } from "./_inflight_requests.ts";

Deno.test("a read waits for earlier overlapping writes only; a write for overlapping reads and writes", () => {
  const inflight = new InflightRequests(16, 1 << 20);
  const write = inflight.add("write", 4096, 4096, 4096);
  const read = inflight.add("read", 0, 8192, 8192);
  assert.equal(write.after.length, 0);
  assert.equal(read.after.length, 1, "the read overlaps the write");
  assert.equal(inflight.add("read", 8192, 4096, 0).after.length, 0, "adjacent, not overlapping");
  assert.equal(inflight.add("read", 0, 100, 0).after.length, 0, "reads do not wait for reads");
  assert.equal(inflight.add("write", 0, 1, 1).after.length, 2, "both reads of byte 0 first");
  assert.equal(inflight.add("write", 20000, 10, 10).after.length, 0);
  assert.equal(inflight.add("none", 0, 0, 0).after.length, 0);
});

Deno.test("a FLUSH waits for every earlier write and for nothing else; later requests do not wait for it", () => {
  const inflight = new InflightRequests(16, 1 << 20);
  inflight.add("write", 0, 10, 10);
  inflight.add("read", 100, 10, 10);
  inflight.add("write", 1 << 19, 10, 10);
  const flush = inflight.add("flush", 0, 0, 0);
  assert.equal(flush.after.length, 2);
  assert.equal(inflight.add("write", 5000, 10, 10).after.length, 0);
});

Deno.test("finishing a request lets the ones waiting for it go", async () => {
  const inflight = new InflightRequests(16, 1 << 20);
  const write = inflight.add("write", 0, 10, 10);
  const read = inflight.add("read", 0, 10, 10);
  let ran = false;
  const waiting = Promise.all(read.after).then(() => (ran = true));
  await Promise.resolve();
  assert.equal(ran, false);
  write.finish();
  write.finish(); // idempotent
  await waiting;
  assert.equal(ran, true);
  assert.equal(inflight.count, 1);
  assert.equal(inflight.bytes, 10);
});

Deno.test("room is bounded by the request count and the data bytes; a lone oversize request may run", async () => {
  const inflight = new InflightRequests(2, 100);
  assert.ok(inflight.hasRoom(1000), "nothing in flight: any size");
  const big = inflight.add("read", 0, 1000, 1000);
  assert.equal(inflight.hasRoom(0), false, "over the byte bound");
  big.finish();
  const a = inflight.add("read", 0, 60, 60);
  assert.ok(inflight.hasRoom(40));
  assert.equal(inflight.hasRoom(41), false);
  const b = inflight.add("read", 0, 10, 10);
  assert.equal(inflight.hasRoom(0), false, "at the request bound");
  let admitted = false;
  const room = inflight.room(30).then(() => (admitted = true));
  let drained = false;
  const drain = inflight.drained().then(() => (drained = true));
  b.finish();
  await room;
  assert.equal(admitted, true);
  assert.equal(drained, false);
  a.finish();
  await drain;
  assert.equal(inflight.count, 0);
  assert.equal(inflight.bytes, 0);
});

Deno.test("InflightRequests refuses bounds that admit nothing", () => {
  assert.throws(() => new InflightRequests(0, 10), /maxRequests >= 1.*received 0/);
});
