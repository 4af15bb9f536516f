import assert from "node:assert/strict";
import { processesWithOpen } from "./open_by.ts";

Deno.test("processesWithOpen finds another process holding a file, by any of its hard links, and not this one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-open-by-" });
  const file = `${dir}/disk.img`;
  await Deno.writeFile(file, new Uint8Array(4096));
  await Deno.link(file, `${dir}/link.img`);
  using mine = await Deno.open(file);
  assert.ok(mine);
  assert.deepEqual(await processesWithOpen(file), [], "this process is not counted");
  // A child holding the image open on its standard input, as a VM holds its disk.
  const child = new Deno.Command("bash", {
    args: ["-c", `exec sleep 60 < ${dir}/link.img`],
  }).spawn();
  try {
    let found = await processesWithOpen(file);
    // Until bash has exec'd sleep (same pid, new name).
    for (let i = 0; i < 100 && found[0]?.name !== "sleep"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      found = await processesWithOpen(file);
    }
    assert.deepEqual(found, [{ pid: child.pid, name: "sleep" }]);
    assert.deepEqual(await processesWithOpen(`${dir}/link.img`), found);
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
  assert.deepEqual(await processesWithOpen(file), []);
  await Deno.remove(dir, { recursive: true });
});
