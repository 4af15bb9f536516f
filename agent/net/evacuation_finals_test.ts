import assert from "node:assert/strict";
import { assertRejectsCode, assertThrowsCode } from "../../fixtures/assert.ts";
import { Bitmap } from "../core/mod.ts";
import { ErrorCode } from "../errors.ts";
import { EvacuationFinals } from "./evacuation_finals.ts";

const quiet = () => {};

Deno.test("finals: an export waits for the final generation, then only it may arrive", async () => {
  const finals = new EvacuationFinals(quiet);
  using dirty = new Bitmap(16).setRange(2, 3);
  using other = new Bitmap(16).setRange(0, 1);
  const waiting = finals.exportFinal("vm", new AbortController().signal);
  finals.checkBegin("vm", 7, other); // not exported yet: anything goes
  finals.record("vm", 7, dirty);
  const { final, unlock } = await waiting;
  assert.equal(final.generation, 7);
  assert.ok(final.dirty.equals(dirty));
  finals.checkBegin("vm", 7, dirty); // the final generation, resent: allowed
  const refused = assertThrowsCode(
    () => finals.checkBegin("vm", 8, dirty),
    ErrorCode.VOLUME_EXPORTED,
  );
  assert.equal(refused.retryable, true);
  assertThrowsCode(() => finals.checkBegin("vm", 7, other), ErrorCode.VOLUME_EXPORTED);
  await assertRejectsCode(
    finals.exportFinal("vm", new AbortController().signal),
    ErrorCode.VOLUME_EXPORTED,
  );
  unlock();
  finals.checkBegin("vm", 8, dirty);
});

Deno.test("finals: the commit of the final generation is told once to each waiter", () => {
  const finals = new EvacuationFinals(quiet);
  using dirty = new Bitmap(4);
  finals.record("vm", 3, dirty);
  let told = 0;
  const waiting = finals.exportFinal("vm", new AbortController().signal);
  return waiting.then(({ final }) => {
    final.onCommitted.add(() => told++);
    finals.committed("vm", 2);
    assert.equal(told, 0);
    finals.committed("vm", 3);
    finals.committed("vm", 3);
    assert.equal(told, 1);
    assert.equal(final.committed, true);
    // Once committed, not even the final generation may arrive again.
    assertThrowsCode(() => finals.checkBegin("vm", 3, dirty), ErrorCode.VOLUME_EXPORTED);
  });
});

Deno.test("finals: an export that gives up before the final generation ends with its reason", async () => {
  const finals = new EvacuationFinals(quiet);
  const stop = new AbortController();
  const waiting = finals.exportFinal("vm", stop.signal);
  stop.abort(new Error("client went away"));
  await assert.rejects(waiting, /client went away/);
});
