/**
 * Boot time of the test guest under TCG (no KVM here), against a named baseline measured in
 * the same run: a QEMU that boots nothing (`-machine none`, start until its QMP socket
 * exists), i.e. the cost of starting the process. For the guest: start until init runs
 * (`PRESYNC-BOOTED` on the serial console), and start until it powered off after a verify
 * (journal replay, fsck, checksums of the seed round) on a fresh 64 MiB disk. Also the cold
 * build of the guest into an empty cache (downloads the kernel package).
 *
 *     deno run -A scripts/bench_guest_boot.ts [--runs 5]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { makeGuestDisk } from "../fixtures/guest/guest_disk.ts";
import { buildGuest } from "../fixtures/guest/guest_image.ts";
import { startGuest } from "../fixtures/guest/guest_vm.ts";
import { startBareQemu } from "../fixtures/guest/qemu_process.ts";
import { Prng } from "../fixtures/prng.ts";
import { median } from "./_bench_timing.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string", default: "5" } },
});
const runs = Number(values.runs);

const cache = await Deno.makeTempDir({ prefix: "presync-bench-guest-cache-" });
const dir = await Deno.makeTempDir({ prefix: "presync-bench-guest-" });
const loadBefore = (await Deno.readTextFile("/proc/loadavg")).trim();
try {
  Deno.env.set("PRESYNC_GUEST_CACHE", cache);
  let start = performance.now();
  const image = await buildGuest();
  const coldBuildMs = performance.now() - start;
  start = performance.now();
  await buildGuest();
  const cachedBuildMs = performance.now() - start;

  const bare: number[] = [];
  const toInit: number[] = [];
  const verify: number[] = [];
  for (let i = 0; i < runs; i++) {
    start = performance.now();
    await (await startBareQemu())[Symbol.asyncDispose]();
    bare.push(performance.now() - start);

    const disk = `${dir}/disk-${i}.img`;
    await makeGuestDisk(disk, 64 << 20, new Prng(i));
    start = performance.now();
    await using guest = await startGuest({ image, dir, disk, mode: "verify" });
    await guest.waitFor(/PRESYNC-BOOTED/);
    toInit.push(performance.now() - start);
    await guest.poweredOff();
    verify.push(performance.now() - start);
    if (!/PRESYNC-VERIFY PASS/.test(await guest.output())) {
      throw new Error(`verify did not pass:\n${await guest.output()}`);
    }
  }
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(`guest ${JSON.stringify(image.versions)}`);
  console.log(`load average before: ${loadBefore}`);
  console.log(`build, empty cache (kernel download, initramfs): ${s(coldBuildMs)}`);
  console.log(`build, cached:                                   ${s(cachedBuildMs)}`);
  console.log(`median of ${runs} runs:`);
  console.log(`  baseline: QEMU -machine none, start to QMP ready: ${s(median(bare))}`);
  console.log(`  guest: start to init (PRESYNC-BOOTED):             ${s(median(toInit))}`);
  console.log(`  guest: start to power-off after verify:            ${s(median(verify))}`);
} finally {
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(cache, { recursive: true });
}
