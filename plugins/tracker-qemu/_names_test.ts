import assert from "node:assert/strict";
import { TrackerNames } from "./_names.ts";

const names = new TrackerNames("db1");

Deno.test("names carry the volume and the generation; only ours parse", () => {
  assert.equal(names.bitmap(7), "presync-db1-7");
  assert.equal(names.generationOf("presync-db1-7"), 7);
  assert.equal(names.generationOf("presync-db1-x"), null);
  assert.equal(names.generationOf("presync-db10-7"), null);
  assert.equal(names.generationOf("backup-7"), null);
  assert.equal(names.generationOf(undefined), null);
  assert.ok(names.isOurs(names.fleeceNode(3)) && !names.isOurs("libvirt-1-format"));
});

Deno.test("overlay file names parse back to their generation, other files do not", () => {
  assert.equal(names.fleeceFileGeneration("presync-db1-fleece-12.qcow2"), 12);
  assert.equal(names.fleeceFile("/d", 12), "/d/presync-db1-fleece-12.qcow2");
  assert.equal(names.fleeceFileGeneration("presync-db1-fleece-12.qcow2.tmp"), null);
  assert.equal(names.fleeceFileGeneration("presync-db2-fleece-12.qcow2"), null);
});
