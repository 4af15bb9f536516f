import assert from "node:assert/strict";
import { Priority } from "./frame.ts";
import { FrameScheduler } from "./scheduler.ts";

/** A one-byte frame tagged `tag`. */
function frame(tag: number) {
  return { bytes: new Uint8Array([tag]), dataBytes: 1 };
}

Deno.test("scheduler: memory overtakes queued bulk and yields to on-demand and control", () => {
  const s = new FrameScheduler();
  s.enqueue(1, Priority.BULK, frame(1));
  s.enqueue(1, Priority.BULK, frame(2));
  s.enqueue(3, Priority.MEMORY, frame(3));
  s.enqueue(3, Priority.MEMORY, frame(4));
  s.enqueue(5, Priority.ON_DEMAND, frame(5));
  s.enqueue(7, Priority.CONTROL, frame(6));
  assert.deepEqual(s.queuedFrames(Priority.MEMORY), 2);
  const order: number[] = [];
  for (let item = s.next(); item; item = s.next()) order.push(item.bytes[0]);
  assert.deepEqual(order, [6, 5, 3, 4, 1, 2]);
  assert.equal(s.empty, true);
  assert.equal(s.queuedFrames(Priority.MEMORY), 0);
});

Deno.test("scheduler: dropping a memory stream leaves the others queued", () => {
  const s = new FrameScheduler();
  s.enqueue(3, Priority.MEMORY, frame(1));
  s.enqueue(1, Priority.BULK, frame(2));
  assert.equal(s.drop(3, Priority.MEMORY).length, 1);
  assert.equal(s.queuedBytes(3), 0);
  assert.equal(s.next()?.bytes[0], 2);
  assert.equal(s.next(), undefined);
});
