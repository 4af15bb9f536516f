import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { defaultPreauthLimits, PreauthGate, sourceAddress } from "./preauth_gate.ts";

const limits = {
  maxPending: 10,
  earlyDropStart: 6,
  earlyDropProbability: 0.5,
  maxPendingPerSource: 4,
  handshakeDeadlineMs: 1000,
};

Deno.test("pre-auth gate: one source gets its share, the others still get in", () => {
  const gate = new PreauthGate(limits, () => 0.99);
  for (let i = 0; i < 4; i++) assert.ok(gate.admit("10.0.0.66").admitted);
  assert.deepEqual(gate.admit("10.0.0.66"), { admitted: false, reason: "source_full" });
  assert.ok(gate.admit("10.0.0.2").admitted, "another source is not held up");
  assert.equal(gate.pending, 5);
  gate.release("10.0.0.66");
  assert.ok(gate.admit("10.0.0.66").admitted, "a released slot is free again");
});

Deno.test("pre-auth gate: nothing is admitted beyond maxPending, whatever the dice say", () => {
  const gate = new PreauthGate(limits, () => 0.999);
  for (let i = 0; i < 10; i++) assert.ok(gate.admit(`10.0.0.${i}`).admitted);
  assert.deepEqual(gate.admit("10.0.1.1"), { admitted: false, reason: "full" });
  for (let i = 0; i < 10; i++) gate.release(`10.0.0.${i}`);
  assert.equal(gate.pending, 0);
  gate.release("10.0.0.0"); // a stray release does not go below zero
  assert.equal(gate.pending, 0);
});

seededTest("pre-auth gate: early drop refuses more the fuller it gets (MaxStartups)", (prng) => {
  let filling = true;
  const random = () => filling ? 0.999999 : prng.nextU32() / 2 ** 32;
  const refusedAt = (pending: number) => {
    let refused = 0;
    for (let trial = 0; trial < 2000; trial++) {
      const gate = new PreauthGate(limits, random);
      filling = true;
      for (let i = 0; i < pending; i++) assert.ok(gate.admit(`10.0.0.${i}`).admitted);
      filling = false;
      if (!gate.admit("10.0.9.9").admitted) refused++;
    }
    return refused;
  };
  assert.equal(refusedAt(5), 0, "below the start mark nothing is dropped");
  const atStart = refusedAt(6); // probability 0.5
  const nearFull = refusedAt(9); // probability 0.875
  assert.ok(atStart > 800 && atStart < 1200, `at the start mark: ${atStart} of 2000`);
  assert.ok(nearFull > 1600 && nearFull < 1900, `near full: ${nearFull} of 2000`);
});

Deno.test("pre-auth limits are checked, naming the key", () => {
  const error = assertThrowsCode(
    () => new PreauthGate({ ...defaultPreauthLimits(), maxPendingPerSource: 0 }),
    "INVALID_ARGUMENT",
  );
  assert.match(error.message, /maxPendingPerSource/);
  assertThrowsCode(
    () => new PreauthGate({ ...defaultPreauthLimits(), earlyDropProbability: 2 }),
    "INVALID_ARGUMENT",
  );
});

Deno.test("source address of a remote: the host without the port, IPv6 included", () => {
  assert.equal(sourceAddress("192.0.2.7:40000"), "192.0.2.7");
  assert.equal(sourceAddress("::1:40000"), "::1");
  assert.equal(sourceAddress("memory:a"), "memory");
});
