/**
 * The full kill -9 sweep of the RBD back end: `plugins/store-rbd/rbd_kill_integration_test.ts`
 * with 30 kills instead of the suite's 6 (seeded: `PRESYNC_SEED` repeats a run). `--serve`
 * runs `plugins/store-rbd/rbd_serve_kill_integration_test.ts` instead: kill -9 of the real
 * `presync serve` while a real agent commits (the suite's 5 kills become N).
 *
 *     npx -y deno@2.9.6 run -A scripts/rbd_kill_sweep.ts [--serve] [--kills N]
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: { kills: { type: "string" }, serve: { type: "boolean" } },
});
const kills = values.kills ?? "30";
if (!/^[1-9][0-9]{0,3}$/.test(kills)) {
  console.error(`--kills must be a number of kills from 1 to 9999: received ${kills}`);
  Deno.exit(2);
}
const file = values.serve ? "rbd_serve_kill_integration_test.ts" : "rbd_kill_integration_test.ts";
const test = new URL(`../plugins/store-rbd/${file}`, import.meta.url).pathname;
const status = await new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", test],
  env: { [values.serve ? "PRESYNC_RBD_SERVE_KILLS" : "PRESYNC_RBD_KILLS"]: kills },
  stdout: "inherit",
  stderr: "inherit",
}).spawn().status;
Deno.exit(status.code);
