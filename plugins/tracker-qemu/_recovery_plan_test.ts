import assert from "node:assert/strict";
import { TrackerNames } from "./_names.ts";
import { type NodeBitmap, planRecovery } from "./_recovery_plan.ts";

const names = new TrackerNames("db1");

function bitmap(name: string, recording: boolean, extra: Partial<NodeBitmap> = {}): NodeBitmap {
  return { name, recording, persistent: true, busy: false, inconsistent: false, ...extra };
}

Deno.test("names carry the volume and the generation; only ours parse", () => {
  assert.equal(names.bitmap(7), "presync-db1-7");
  assert.equal(names.generationOf("presync-db1-7"), 7);
  assert.equal(names.generationOf("presync-db1-x"), null);
  assert.equal(names.generationOf("presync-db10-7"), null);
  assert.equal(names.generationOf("backup-7"), null);
  assert.equal(names.generationOf(undefined), null);
  assert.ok(names.isOurs(names.fleeceNode(3)) && !names.isOurs("libvirt-1-format"));
});

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
  assert.deepEqual(plan.actions, [
    { type: "block-dirty-bitmap-remove", data: { node: "n", name: "presync-db1-4" } },
  ]);
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

Deno.test("overlay file names parse back to their generation, other files do not", () => {
  assert.equal(names.fleeceFileGeneration("presync-db1-fleece-12.qcow2"), 12);
  assert.equal(names.fleeceFile("/d", 12), "/d/presync-db1-fleece-12.qcow2");
  assert.equal(names.fleeceFileGeneration("presync-db1-fleece-12.qcow2.tmp"), null);
  assert.equal(names.fleeceFileGeneration("presync-db2-fleece-12.qcow2"), null);
});
