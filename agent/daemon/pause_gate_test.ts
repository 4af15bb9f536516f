import assert from "node:assert/strict";
import { PauseGate } from "./pause_gate.ts";

/** Whether `promise` settled after every pending callback ran. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("pause gate: open passes, closed holds until opened", async () => {
  const gate = new PauseGate();
  const never = new Promise(() => {});
  assert.equal(await settled(gate.wait(never)), true);
  gate.close();
  gate.close();
  assert.equal(gate.paused, true);
  const held = gate.wait(never);
  assert.equal(await settled(held), false);
  gate.open();
  assert.equal(await settled(held), true);
  assert.equal(gate.paused, false);
});

Deno.test("pause gate: a held sender is let go when the session ends, even by an error", async () => {
  const gate = new PauseGate();
  gate.close();
  let end!: (err: Error) => void;
  const ended = new Promise<void>((_, reject) => end = reject);
  const held = gate.wait(ended);
  end(new Error("link cut"));
  assert.equal(await settled(held), true);
  await held; // resolves: the next write is what fails
});
