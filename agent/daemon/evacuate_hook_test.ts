import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { ErrorCode } from "../errors.ts";
import { runEvacuateHook } from "./evacuate_hook.ts";

Deno.test("evacuate hook: runs with the volume and image in its environment", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-hook-" });
  try {
    await runEvacuateHook(`echo "$PRESYNC_VOLUME $PRESYNC_IMAGE" > ${dir}/ran`, "db1", "/img/db1");
    assert.equal(await Deno.readTextFile(`${dir}/ran`), "db1 /img/db1\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evacuate hook: a failing hook is an error naming it and its exit code", async () => {
  const err = await assertRejectsCode(
    runEvacuateHook("exit 3", "db1", "/img"),
    ErrorCode.INVALID_ARGUMENT,
  );
  assert.match(err.message, /`exit 3` failed with exit code 3; the final cut was not taken/);
});
