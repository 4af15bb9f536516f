import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { Bitmap } from "../core/mod.ts";
import { ErrorCode } from "../errors.ts";
import { newVolumeIdentity } from "../volume/volume_identity.ts";
import { assertResumable } from "./resume_check.ts";

const identity = newVolumeIdentity("vm", 1 << 20, 65536);

function state(committedGeneration: number, pendingGeneration?: number) {
  const dirty = new Bitmap(16);
  return {
    dir: "/var/lib/presync/agent/vm",
    identity,
    committedGeneration,
    pending: pendingGeneration === undefined
      ? null
      : { generation: pendingGeneration, cutTimeMs: 0, dirty, acked: dirty },
  };
}

Deno.test("resume check: the same generation, or the pending one committed early, resume", () => {
  assertResumable(state(5), 5);
  assertResumable(state(5, 6), 5);
  assertResumable(state(5, 6), 6);
});

Deno.test("resume check: a destination ahead of the source's state is stale state, explained", () => {
  const err = assertThrowsCode(() => assertResumable(state(5, 6), 9), ErrorCode.SOURCE_STATE_STALE);
  assert.match(
    err.message,
    /at generation 9 but this agent's state \(\/var\/lib\/presync\/agent\/vm\)/,
  );
  assert.match(err.message, /records generation 5 with 6 in flight/);
  assert.match(err.message, /restored from a backup/);
  assert.match(err.message, /remove \/var\/lib\/presync\/agent\/vm and the destination's replica/);
});

Deno.test("resume check: a destination behind the source was re-created or restored", () => {
  const err = assertThrowsCode(() => assertResumable(state(7), 2), ErrorCode.GENERATION_MISMATCH);
  assert.match(err.message, /re-created or restored from an older copy/);
  assert.equal(err.retryable, false);
});
