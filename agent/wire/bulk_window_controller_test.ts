import assert from "node:assert/strict";
import { BulkWindowController } from "./bulk_window_controller.ts";

const MiB = 1024 * 1024;

Deno.test("bulk window: starts narrow, then follows rate × smallest RTT × 1.5", () => {
  const c = new BulkWindowController();
  assert.equal(c.update(0, 0, Infinity), 512 * 1024);
  // 12.5 MB/s (100 Mbit/s) at 20 ms: 250 kB in flight, ×1.5.
  assert.equal(c.update(12.5e6 / 4, 250, 20), 375_000);
  // A larger RTT sample does not widen it: the smallest RTT counts.
  assert.equal(c.update(2 * 12.5e6 / 4, 500, 80), 375_000);
});

Deno.test("bulk window: the highest recent rate counts, and old samples age out", () => {
  const c = new BulkWindowController({ samples: 2, minBytes: 1000 });
  c.update(0, 0, 100);
  assert.equal(c.update(10 * MiB, 1000, 100), Math.round(1.5 * 10 * MiB * 0.1));
  c.update(10 * MiB + 1000, 2000, 100);
  // The fast second is still one of the last two samples.
  assert.equal(c.update(10 * MiB + 2000, 3000, 100) < 10_000, true);
});

Deno.test("bulk window: never below the minimum, even on an idle stream", () => {
  const c = new BulkWindowController({ minBytes: 128 * 1024 });
  c.update(0, 0, 5);
  assert.equal(c.update(0, 250, 5), 128 * 1024);
});
