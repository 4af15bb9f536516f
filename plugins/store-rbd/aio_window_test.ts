import assert from "node:assert/strict";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { assertRejectsCode, assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { type AioTarget, AioWindow } from "./aio_window.ts";

/** A target whose writes stay in flight until the test settles them. */
class HeldTarget implements AioTarget {
  readonly calls: { offset: number; length: number; settle: (err?: Error) => void }[] = [];

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#hold(offset, data.length);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#hold(offset, length);
  }

  #hold(offset: number, length: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.calls.push({ offset, length, settle: (err) => err ? reject(err) : resolve() });
    });
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

seededTest(
  "a window never has more than depth requests in flight and drains them all",
  async (prng) => {
    const target = new HeldTarget();
    const depth = 1 + prng.int(8);
    const window = new AioWindow(target, depth);
    let settled = 0;
    const total = 50;
    const writer = (async () => {
      for (let i = 0; i < total; i++) await window.write(i * 4096, new Uint8Array(4096));
    })();
    while (settled < total) {
      await tick();
      assert.ok(window.inflight <= depth, `${window.inflight} in flight, depth ${depth}`);
      const open = target.calls.slice(settled);
      if (open.length === 0) continue;
      // Settle a random number of the oldest requests.
      const n = 1 + prng.int(open.length);
      for (const call of open.slice(0, n)) call.settle();
      settled += n;
    }
    await writer;
    await window.drain();
    assert.equal(window.inflight, 0);
    assert.deepEqual(
      target.calls.map((c) => c.offset),
      Array.from({ length: total }, (_, i) => i * 4096),
    );
  },
);

Deno.test("the first failure is kept: later writes and drains throw it, nothing more is sent", async () => {
  const target = new HeldTarget();
  const window = new AioWindow(target, 2);
  await window.write(0, new Uint8Array(1));
  await window.writeZeroes(1, 1);
  const first = new PresyncError(ErrorCode.NO_SPACE, "pool full", { retryable: true });
  target.calls[0].settle(first);
  target.calls[1].settle(new PresyncError(ErrorCode.IO, "second"));
  await assertRejectsCode(window.drain(), ErrorCode.NO_SPACE);
  await assertRejectsCode(window.write(2, new Uint8Array(1)), ErrorCode.NO_SPACE);
  assert.equal(target.calls.length, 2, "no write after the failure");
});

Deno.test("a write waiting for a slot fails with the failure that freed it", async () => {
  const target = new HeldTarget();
  const window = new AioWindow(target, 1);
  await window.write(0, new Uint8Array(1));
  const waiting = window.write(1, new Uint8Array(1));
  target.calls[0].settle(new PresyncError(ErrorCode.TIMEOUT, "osd gone", { retryable: true }));
  await assertRejectsCode(waiting, ErrorCode.TIMEOUT);
  assert.equal(target.calls.length, 1);
});

Deno.test("a depth outside 1 to MAX_AIO_DEPTH is refused", () => {
  for (const depth of [0, -1, 1.5, 1025]) {
    assertThrowsCode(() => new AioWindow(new HeldTarget(), depth), ErrorCode.INVALID_ARGUMENT);
  }
});
