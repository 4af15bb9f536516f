import assert from "node:assert/strict";
import { TrackerNames } from "./_names.ts";
import { type NodeBitmap, planRecovery } from "./_recovery_plan.ts";

const names = new TrackerNames("db1");

function bitmap(name: string, recording: boolean, extra: Partial<NodeBitmap> = {}): NodeBitmap {
  return { name, recording, persistent: true, busy: false, inconsistent: false, ...extra };
}

Deno.test("first start: no bitmap, so a fresh one and a scan", () => {
  const plan = planRecovery(names, "n", [bitmap("other", true)], 0, true);
  assert.equal(plan.scan, true);
  assert.match(plan.reason, /no presync bitmap/);
  assert.deepEqual(plan.actions, [
    {
      type: "block-dirty-bitmap-add",
      data: { node: "n", name: "presync-db1-1", persistent: true },
    },
  ]);
});

Deno.test("a clean restart with the active bitmap of the next generation changes nothing", () => {
  const plan = planRecovery(names, "n", [bitmap("presync-db1-5", true)], 4, true);
  assert.equal(plan.scan, false);
  assert.deepEqual(plan.actions, []);
  assert.equal(plan.active, "presync-db1-5");
});

Deno.test("crash after the agent recorded the cut: the frozen bitmap is dropped, not resent", () => {
  const plan = planRecovery(
    names,
    "n",
    [bitmap("presync-db1-4", false), bitmap("presync-db1-5", true)],
    4,
    false,
  );
  assert.equal(plan.scan, false);
  assert.deepEqual(plan.removed, ["presync-db1-4"]);
  assert.deepEqual(plan.merged, []);
  assert.deepEqual(plan.cleanup, [
    { type: "block-dirty-bitmap-remove", data: { node: "n", name: "presync-db1-4" } },
  ]);
  assert.deepEqual(plan.actions, []);
});

Deno.test("crash between the QMP rotation and recording: the unrecorded cut is folded in", () => {
  // Generation 5 was cut (frozen) and 6 records, but the agent only recorded 4.
  const plan = planRecovery(
    names,
    "n",
    [bitmap("presync-db1-5", false), bitmap("presync-db1-6", true)],
    4,
    true,
  );
  assert.equal(plan.scan, false);
  assert.equal(plan.active, "presync-db1-5");
  assert.deepEqual(plan.merged, ["presync-db1-5"]);
  assert.deepEqual(plan.actions, [
    { type: "block-dirty-bitmap-enable", data: { node: "n", name: "presync-db1-5" } },
    {
      type: "block-dirty-bitmap-merge",
      data: { node: "n", target: "presync-db1-5", bitmaps: ["presync-db1-6"] },
    },
    { type: "block-dirty-bitmap-remove", data: { node: "n", name: "presync-db1-6" } },
  ]);
});

Deno.test("names ahead of the recorded generation are renamed by one atomic merge", () => {
  const plan = planRecovery(
    names,
    "n",
    [bitmap("presync-db1-7", false), bitmap("presync-db1-8", true)],
    4,
    true,
  );
  assert.equal(plan.active, "presync-db1-5");
  assert.deepEqual(plan.merged, ["presync-db1-7"]);
  assert.deepEqual(plan.actions.map((a) => a.type), [
    "block-dirty-bitmap-add",
    "block-dirty-bitmap-merge",
    "block-dirty-bitmap-remove",
    "block-dirty-bitmap-remove",
  ]);
  assert.deepEqual(plan.cleanup, []);
});

Deno.test("an inconsistent, removed or disabled active bitmap means a scan, never trust", () => {
  const inconsistent = planRecovery(
    names,
    "n",
    [bitmap("presync-db1-5", true, { inconsistent: true })],
    4,
    true,
  );
  assert.equal(inconsistent.scan, true);
  assert.match(inconsistent.reason, /inconsistent/);
  assert.deepEqual(inconsistent.removed, ["presync-db1-5"]);
  // Removed before the fresh bitmap of the same name is added.
  assert.deepEqual(inconsistent.cleanup.map((a) => a.data.name), ["presync-db1-5"]);
  assert.deepEqual(inconsistent.actions.map((a) => [a.type, a.data.name]), [
    ["block-dirty-bitmap-add", "presync-db1-5"],
  ]);
  const disabled = planRecovery(names, "n", [bitmap("presync-db1-5", false)], 3, true);
  assert.equal(disabled.scan, true);
  assert.match(disabled.reason, /removed or disabled/);
  // A recorded generation's inconsistent leftover does not force a scan.
  const leftover = planRecovery(
    names,
    "n",
    [bitmap("presync-db1-4", false, { inconsistent: true }), bitmap("presync-db1-5", true)],
    4,
    true,
  );
  assert.equal(leftover.scan, false);
  assert.deepEqual(leftover.removed, ["presync-db1-4"]);
});
