/**
 * Control for the migration crash investigation (issue 16): QEMU migrates the test guest's
 * memory straight to another QEMU (`migrate tcp:` through the WAN emulator, no presync), both
 * QEMUs on the same disk image (shared storage: memory-only migration), with the source's
 * `downtime-limit` set; then the destination guest's console is watched for a kernel fault
 * while its workload goes on. Each run prints whether the destination guest crashed.
 *
 * ```sh
 * npx -y deno@2.9.6 run -A scripts/qemu_migrate_control.ts [--runs 6] [--downtime-limit 100] \
 *   [--rate-mbit 100] [--rtt-ms 150] [--ram-mib 256] [--watch-s 40] [--converge-s 240] [--direct]
 * ```
 *
 * `--direct` leaves the WAN emulator out: the QEMUs talk over loopback, the source's
 * `max-bandwidth` set to the link's rate instead (no delay), so a crash that stays tells the
 * emulator is not its cause.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { QmpClient } from "../agent/qemu/mod.ts";
import { freePort } from "../fixtures/cluster.ts";
import { makeGuestDisk } from "../fixtures/guest/guest_disk.ts";
import { buildGuest } from "../fixtures/guest/guest_image.ts";
import { startGuest } from "../fixtures/guest/guest_vm.ts";
import { Prng } from "../fixtures/prng.ts";
import { WanEmu } from "./wan_emu.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "6" },
    "downtime-limit": { type: "string", default: "100" },
    "rate-mbit": { type: "string", default: "100" },
    "rtt-ms": { type: "string", default: "150" },
    "ram-mib": { type: "string", default: "256" },
    "disk-mib": { type: "string", default: "256" },
    "watch-s": { type: "string", default: "40" },
    "converge-s": { type: "string", default: "240" },
    direct: { type: "boolean", default: false },
  },
});
const MiB = 1024 * 1024;
/** What a guest kernel in trouble prints. */
const FAULT =
  /Oops|BUG:|Kernel panic|list_(add|del) corruption|general protection fault|Call Trace/;
const link = {
  delayMs: Number(values["rtt-ms"]) / 2,
  rateBitsPerSecond: Number(values["rate-mbit"]) * 1e6,
  queueBytes: 512 * 1024,
};
const image = await buildGuest();
const root = await Deno.makeTempDir({ prefix: "presync-qemu-control-" });
interface RunResult {
  run: number;
  /** False when QEMU's migration did not complete within `--converge-s` (then cancelled). */
  converged: boolean;
  crashed: boolean;
  rounds: number;
  downtimeMs: number;
  seconds: number;
  ramBytes: number;
  iterations: number;
}
interface MigrationInfo {
  downtime?: number;
  ram?: { transferred?: number; "dirty-sync-count"?: number };
}
const results: RunResult[] = [];
try {
  const template = `${root}/template.img`;
  await makeGuestDisk(template, Number(values["disk-mib"]) * MiB, new Prng(16));
  for (let run = 1; run <= Number(values.runs); run++) {
    const dir = `${root}/run${run}`;
    await Deno.mkdir(`${dir}/src`, { recursive: true });
    await Deno.mkdir(`${dir}/dst`);
    const disk = `${dir}/disk.img`;
    await Deno.copyFile(template, disk);
    const port = freePort();
    const emu = values.direct
      ? undefined
      : WanEmu.start({ target: { hostname: "127.0.0.1", port }, up: link, down: link });
    // Both QEMUs open the one image: QEMU's own locks would refuse the second.
    const shared = `${disk},file.locking=off`;
    const guest = (side: string, extraArgs: string[] = []) =>
      startGuest({
        image,
        dir: `${dir}/${side}`,
        disk: shared,
        mode: "workload",
        memoryMiB: Number(values["ram-mib"]),
        extraArgs,
      });
    await using src = await guest("src");
    await src.waitFor(/PRESYNC-ROUND 2 durable/, 300_000);
    await using dst = await guest("dst", ["-incoming", `tcp:127.0.0.1:${port}`]);
    const sq = await QmpClient.connect(src.qemu.qmp[0], { timeoutMs: 60_000 });
    const dq = await QmpClient.connect(dst.qemu.qmp[0], { timeoutMs: 60_000 });
    try {
      await sq.execute("migrate-set-parameters", {
        "downtime-limit": Number(values["downtime-limit"]),
        ...(emu ? {} : { "max-bandwidth": Math.floor(link.rateBitsPerSecond / 8) }),
      });
      const resumed = dq.waitForEvent("RESUME", () => true, Number(values["converge-s"]) * 1000);
      const started = performance.now();
      const to = emu?.addr ?? { hostname: "127.0.0.1", port };
      await sq.execute("migrate", { uri: `tcp:${to.hostname}:${to.port}` });
      const converged = await resumed.then(() => true, () => false);
      const info = await sq.execute("query-migrate") as MigrationInfo;
      const measured = {
        run,
        converged,
        seconds: Math.round(performance.now() - started) / 1000,
        ramBytes: info.ram?.transferred ?? -1,
        iterations: info.ram?.["dirty-sync-count"] ?? -1,
        downtimeMs: info.downtime ?? -1,
      };
      if (!converged) {
        await sq.execute("migrate_cancel");
        const result = { ...measured, crashed: false, rounds: 0 };
        results.push(result);
        console.log(JSON.stringify(result));
        continue;
      }
      const before = (await dst.output()).match(/PRESYNC-ROUND \d+ durable/g)?.length ?? 0;
      const until = Date.now() + Number(values["watch-s"]) * 1000;
      let crashed = false;
      while (Date.now() < until && !dst.exited) {
        if (FAULT.test(await dst.output())) {
          crashed = true;
          break;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      const out = await dst.output();
      crashed ||= FAULT.test(out) || dst.exited;
      const rounds = (out.match(/PRESYNC-ROUND \d+ durable/g)?.length ?? 0) - before;
      const result = { ...measured, crashed, rounds };
      results.push(result);
      console.log(JSON.stringify(result));
      if (crashed) {
        await Deno.copyFile(dst.console, `/tmp/qemu_control_crash_${run}.log`);
        console.log(`destination console kept: /tmp/qemu_control_crash_${run}.log`);
      }
    } finally {
      await sq.close();
      await dq.close();
      await emu?.close();
    }
  }
  const crashes = results.filter((r) => r.crashed).length;
  const migrated = results.filter((r) => r.converged).length;
  console.log(
    `downtime-limit ${values["downtime-limit"]} ms${values.direct ? ", direct" : ""}: ` +
      `${crashes} of ${migrated} destination guests crashed (${results.length - migrated} ` +
      `migrations did not converge); load ${(await Deno.readTextFile("/proc/loadavg")).trim()}`,
  );
} finally {
  await Deno.remove(root, { recursive: true });
}
