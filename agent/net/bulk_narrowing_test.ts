import assert from "node:assert/strict";
import { BulkNarrowing, type NarrowedStream } from "./bulk_narrowing.ts";

const DEFAULT = 4 << 20;

/** A stream that records the windows it is given; `stop` ends its pings. */
function stream() {
  const windows: number[] = [];
  let current = true;
  let pinged!: () => void;
  const firstPing = new Promise<void>((resolve) => pinged = resolve);
  const s: NarrowedStream & { windows: number[]; stop(): void; firstPing: Promise<void> } = {
    windows,
    firstPing,
    defaultWindowBytes: DEFAULT,
    ping: () => {
      pinged();
      return current ? Promise.resolve(10) : Promise.reject(new Error("ended"));
    },
    setReceiveWindow: (bytes) => void windows.push(bytes),
    receivedBytes: () => 0,
    current: () => current,
    stop: () => void (current = false),
  };
  return s;
}

Deno.test("bulk narrowing: a narrowed volume's stream starts narrow and is widened when it ends", async () => {
  const narrowing = new BulkNarrowing();
  const s = stream();
  narrowing.narrow("vm", Infinity, s);
  narrowing.attach("vm", s); // attaching twice runs one loop
  await s.firstPing;
  assert.deepEqual(s.windows, [512 * 1024]);
  s.stop();
  const deadline = Date.now() + 10_000;
  while (s.windows.at(-1) !== DEFAULT && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(s.windows.at(-1), DEFAULT);
  assert.equal(s.windows.filter((w) => w === 512 * 1024).length, 1);
});

Deno.test("bulk narrowing: a stream of a volume not narrowed keeps the default window", () => {
  const narrowing = new BulkNarrowing();
  const s = stream();
  narrowing.attach("vm", s);
  narrowing.narrow("other", Infinity);
  narrowing.widen("other");
  assert.deepEqual(s.windows, []);
});
