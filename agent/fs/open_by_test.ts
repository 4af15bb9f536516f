import assert from "node:assert/strict";
import { holdOpen } from "../../fixtures/hold_open.ts";
import { processesWithOpen } from "./open_by.ts";

Deno.test("processesWithOpen finds another process holding a file, by any of its hard links, and not this one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-open-by-" });
  const file = `${dir}/disk.img`;
  await Deno.writeFile(file, new Uint8Array(4096));
  await Deno.link(file, `${dir}/link.img`);
  using mine = await Deno.open(file);
  assert.ok(mine);
  assert.deepEqual(await processesWithOpen(file), [], "this process is not counted");
  // A child holding the image open, as a VM holds its disk.
  const child = await holdOpen(`${dir}/link.img`);
  try {
    const found = await processesWithOpen(file);
    assert.deepEqual(found, [{ pid: child.pid, name: "sleep" }]);
    assert.deepEqual(await processesWithOpen(`${dir}/link.img`), found);
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
  assert.deepEqual(await processesWithOpen(file), []);
  await Deno.remove(dir, { recursive: true });
});
