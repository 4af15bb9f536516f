/**
 * Whole-VM migration benchmark (issue 16): `presync migrate` (disk pre-synced in the
 * background, memory over the session, final cut at the switchover) against QEMU's own storage
 * migration (`drive-mirror` to the destination's NBD server, then `migrate`, as
 * `virsh migrate --copy-storage-all` does), on the same emulated link, the same test guest
 * writing files, in one run. Also measures how many of the guest's non-zero RAM pages are
 * already in its disk (4 KiB pages by BLAKE3), for "memory pages sent as references".
 *
 * presync's agent tracks the guest's disk over QMP by default (`--tracker qmp`: QEMU's dirty
 * bitmap and fleece, so the final cut at the switchover reads no image); `--tracker scan` runs
 * it on the raw image file instead (the final cut re-reads the image with the VM paused), and
 * `--tracker both` runs presync once with each. Each contender reports QEMU's downtime and the
 * guest-visible pause: the source's `STOP` event to the destination's `RESUME` (one host clock).
 *
 * ```sh
 * npx -y deno@2.9.6 run -A scripts/bench_migrate.ts [--disk-mib 256] [--ram-mib 256] \
 *   [--rate-mbit 100] [--rtt-ms 150] [--tracker qmp|scan|both] [--skip-qemu] \
 *   [--qemu-mirror-timeout 300] [--skip-ram-match] [--baseline DIR] [--rounds 1] \
 *   [--downtime-limit MS]
 * ```
 *
 * `--baseline DIR` runs every presync migration a second time with the presync of another
 * checkout (e.g. `git archive main | tar -x -C DIR`), the two alternating in each of
 * `--rounds` rounds, and prints each one's switchover on one clock (the timeline) and the tail:
 * the source QEMU's `completed` to the destination's `RESUME`. `--downtime-limit MS` sets the
 * source QEMU's `downtime-limit` (default QEMU's 300 ms) through the bench's own monitor before
 * each presync migration, for every variant alike.
 *
 * QEMU's contender uses two emulated links of that shape (one for NBD, one for the migration
 * stream): the mirror's bulk is over before the migration starts, so they barely overlap.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { blake3 } from "../agent/core/mod.ts";
import { toHex } from "../agent/hex.ts";
import { QmpClient } from "../agent/qemu/mod.ts";
import { Cluster, freePort, jsonLines, PresyncProcess } from "../fixtures/cluster.ts";
import { makeGuestDisk } from "../fixtures/guest/guest_disk.ts";
import { buildGuest, type GuestImage } from "../fixtures/guest/guest_image.ts";
import { type Guest, startGuest } from "../fixtures/guest/guest_vm.ts";
import { pollUntil, runTool } from "../fixtures/nbd_tools.ts";
import { Prng } from "../fixtures/prng.ts";
import { WanEmu } from "./wan_emu.ts";

const MiB = 1024 * 1024;
const PAGE = 4096;

const { values } = parseArgs({
  options: {
    "disk-mib": { type: "string", default: "256" },
    "ram-mib": { type: "string", default: "256" },
    "rate-mbit": { type: "string", default: "100" },
    "rtt-ms": { type: "string", default: "150" },
    seed: { type: "string", default: "16" },
    "skip-qemu": { type: "boolean", default: false },
    tracker: { type: "string", default: "qmp" },
    "qemu-mirror-timeout": { type: "string", default: "300" },
    "skip-ram-match": { type: "boolean", default: false },
    baseline: { type: "string" },
    rounds: { type: "string", default: "1" },
    "downtime-limit": { type: "string" },
  },
});
const diskMiB = Number(values["disk-mib"]);
if (!["qmp", "scan", "both"].includes(values.tracker)) {
  throw new Error(`--tracker is qmp, scan or both, not ${values.tracker}`);
}
/** presync's trackers to run, in order. */
const trackers: ("qmp" | "scan")[] = values.tracker === "both"
  ? ["qmp", "scan"]
  : [values.tracker as "qmp" | "scan"];
const ramMiB = Number(values["ram-mib"]);
const link = {
  delayMs: Number(values["rtt-ms"]) / 2,
  rateBitsPerSecond: Number(values["rate-mbit"]) * 1e6,
  queueBytes: 512 * 1024,
};

/** A presync to run: this tree's, or the baseline's (another checkout's `agent/main.ts`). */
interface Variant {
  name: string;
  main?: string;
}

/** The guest's disk, written once and copied for each contender. */
async function template(root: string, prng: Prng): Promise<string> {
  const disk = `${root}/template.img`;
  await makeGuestDisk(disk, diskMiB * MiB, prng);
  return disk;
}

async function qmpOf(guest: Guest, index = 0): Promise<QmpClient> {
  return await QmpClient.connect(guest.qemu.qmp[index], { timeoutMs: 60_000 });
}

/**
 * The guest-visible pause of a migration: from the source's `STOP` to the destination's
 * `RESUME`, both QEMUs on this host's clock. Watch before the migration starts.
 */
function watchPause(source: QmpClient, destination: QmpClient): Promise<number> {
  const stopped = source.waitForEvent("STOP", () => true, 900_000);
  const resumed = destination.waitForEvent("RESUME", () => true, 900_000);
  return Promise.all([stopped, resumed]).then(([s, r]) =>
    Math.round(r.timestampMs - s.timestampMs)
  );
}

/** One step of a migration's switchover on this host's wall clock, ms. */
interface Step {
  what: string;
  atMs: number;
}

/** Records the QMP events of `qmp` as steps named `site EVENT[ status]`. */
function recordEvents(qmp: QmpClient, site: string, into: Step[]): void {
  qmp.onEvent((e) => {
    // The qmp tracker's fleece jobs change state a dozen times per cut: its log says enough.
    if (e.event === "JOB_STATUS_CHANGE") return;
    const status = e.event === "MIGRATION" ? ` ${(e.data as { status?: string }).status}` : "";
    into.push({ what: `${site} QMP ${e.event}${status}`, atMs: e.timestampMs });
  });
}

/** The steps a presync process logged (JSON lines with an ISO `time`). */
function loggedSteps(process: PresyncProcess, site: string): Step[] {
  const steps: Step[] = [];
  for (const line of jsonLines(process)) {
    const atMs = Date.parse(String(line.time));
    if (line.event === "migration_step") {
      const { time: _t, level: _l, event: _e, step: _s, ...fields } = line;
      const shown = ["pre-switchover", "figures"].includes(String(line.step))
        ? ` ${JSON.stringify(fields)}`
        : "";
      steps.push({ what: `${site} presync ${line.step}${shown}`, atMs });
      if (line.step === "tunnel-ended") {
        steps.push({ what: `${site} tunnel: last byte sent`, atMs: Number(line.sendEndedAtMs) });
      }
    } else if (line.event === "migration_received") {
      steps.push({
        what: `${site} tunnel: last byte delivered to QEMU`,
        atMs: Number(line.receiveEndedAtMs),
      });
    } else if (line.event === "evacuation_step" || line.event === "final_cut_detached") {
      steps.push({ what: `${site} presync ${line.event} ${line.step ?? ""}`.trim(), atMs });
    } else if (line.event === "export_started") {
      steps.push({ what: `${site} presync export switched to the final generation`, atMs });
    }
  }
  return steps;
}

/**
 * The switchover's steps from the source's `STOP` on, in time order, ms after it (steps before
 * the `STOP`, e.g. the memory phase's, are left out).
 */
function timelineOf(steps: Step[]): { what: string; ms: number }[] {
  const stop = steps.find((s) => s.what === "source QMP STOP");
  if (!stop) return [];
  return steps.filter((s) => s.atMs >= stop.atMs - 1 && Number.isFinite(s.atMs) && s.atMs > 0)
    .sort((a, b) => a.atMs - b.atMs)
    .map((s) => ({ what: s.what, ms: Math.round(s.atMs - stop.atMs) }));
}

/** Polls `query-migrate` until it completes; returns QEMU's last answer. */
async function untilCompleted(qmp: QmpClient): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 900_000;
  while (Date.now() < deadline) {
    const info = await qmp.execute("query-migrate") as Record<string, unknown>;
    if (info.status === "completed") return info;
    if (info.status === "failed" || info.status === "cancelled") {
      throw new Error(`QEMU's migration ${info.status}: ${info["error-desc"]}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("QEMU's migration did not complete in 15 min");
}

/** QEMU's storage migration: mirror the disk over NBD, then migrate, over emulated links. */
async function qemuStorageMigration(root: string, image: GuestImage, disk: string) {
  const dir = `${root}/qemu`;
  await Deno.mkdir(`${dir}/src`, { recursive: true });
  await Deno.mkdir(`${dir}/dst`);
  const source = `${dir}/src.img`;
  await Deno.copyFile(disk, source);
  const target = `${dir}/dst.img`;
  await runTool("qemu-img", ["create", "-q", "-f", "raw", target, String(diskMiB * MiB)]);
  const nbdPort = freePort();
  const migrationPort = freePort();
  const nbdLink = WanEmu.start({
    target: { hostname: "127.0.0.1", port: nbdPort },
    up: link,
    down: link,
  });
  const migrationLink = WanEmu.start({
    target: { hostname: "127.0.0.1", port: migrationPort },
    up: link,
    down: link,
  });
  await using src = await startGuest({
    image,
    dir: `${dir}/src`,
    disk: source,
    mode: "workload",
    memoryMiB: ramMiB,
  });
  await src.waitFor(/PRESYNC-ROUND 2 durable/, 300_000);
  await using dst = await startGuest({
    image,
    dir: `${dir}/dst`,
    disk: target,
    mode: "workload",
    memoryMiB: ramMiB,
    extraArgs: ["-incoming", `tcp:127.0.0.1:${migrationPort}`],
  });
  const sq = await qmpOf(src);
  const dq = await qmpOf(dst);
  try {
    const blocks = await dq.execute("query-block") as { inserted?: { "node-name": string } }[];
    const node = blocks.find((b) => b.inserted)!.inserted!["node-name"];
    await dq.execute("nbd-server-start", {
      addr: { type: "inet", data: { host: "127.0.0.1", port: String(nbdPort) } },
    });
    await dq.execute("block-export-add", {
      type: "nbd",
      id: "disk",
      "node-name": node,
      name: "disk",
      writable: true,
    });
    const sblocks = await sq.execute("query-block") as { device: string; inserted?: unknown }[];
    const device = sblocks.find((b) => b.inserted)!.device;
    const started = performance.now();
    const mirrorTimeoutMs = Number(values["qemu-mirror-timeout"]) * 1000;
    const ready = sq.waitForEvent("BLOCK_JOB_READY", () => true, mirrorTimeoutMs);
    await sq.execute("drive-mirror", {
      "job-id": "mirror",
      device,
      target: `nbd://${nbdLink.addr.hostname}:${nbdLink.addr.port}/disk`,
      format: "raw",
      mode: "existing",
      sync: "full",
    });
    await ready.catch(async (err) => {
      const jobs = await sq.execute("query-block-jobs") as { offset: number; len: number }[];
      throw new Error(
        `QEMU's mirror was not ready after ${values["qemu-mirror-timeout"]} s (copied ` +
          `${jobs[0]?.offset} of ${jobs[0]?.len} bytes to do, the guest writing on): ${err}`,
      );
    });
    const mirroredMs = performance.now() - started;
    const pause = watchPause(sq, dq);
    await sq.execute("migrate", {
      uri: `tcp:${migrationLink.addr.hostname}:${migrationLink.addr.port}`,
    });
    const info = await untilCompleted(sq);
    const guestPauseMs = await pause;
    await sq.execute("block-job-cancel", { device: "mirror" });
    const totalMs = performance.now() - started;
    return {
      totalSeconds: totalMs / 1000,
      mirrorSeconds: mirroredMs / 1000,
      qemuDowntimeMs: info.downtime as number,
      guestPauseMs,
      memoryBytes: (info.ram as { transferred: number }).transferred,
    };
  } finally {
    await sq.close();
    await dq.close();
    await nbdLink.close();
    await migrationLink.close();
  }
}

/**
 * Share of the guest's non-zero 4 KiB RAM pages whose bytes are also 4 KiB of its disk, at
 * any 1 KiB offset (ext4 on a small disk uses 1 KiB blocks, so cached file pages need not be
 * 4 KiB-aligned on the disk).
 */
async function ramInDisk(qmp: QmpClient, diskPath: string, dumpPath: string) {
  await qmp.execute("pmemsave", { val: 0, size: ramMiB * MiB, filename: dumpPath });
  const pagesOf = async (path: string, step: number) => {
    const bytes = await Deno.readFile(path);
    const set = new Map<string, number>();
    for (let at = 0; at + PAGE <= bytes.length; at += step) {
      const page = bytes.subarray(at, at + PAGE);
      if (page.every((b) => b === 0)) continue;
      const key = toHex(blake3(page));
      set.set(key, (set.get(key) ?? 0) + 1);
    }
    return set;
  };
  const disk = await pagesOf(diskPath, 1024);
  const ram = await pagesOf(dumpPath, PAGE);
  let nonZero = 0;
  let inDisk = 0;
  for (const [key, count] of ram) {
    nonZero += count;
    if (disk.has(key)) inDisk += count;
  }
  return { nonZeroRamPages: nonZero, inDiskPages: inDisk, share: inDisk / Math.max(1, nonZero) };
}

/**
 * presync: background pre-sync over the link, then `presync migrate`; the agent tracks the
 * disk with `tracker` (QMP monitors of the source: 0 the migration's, 1 the bench's, 2 the
 * qmp tracker's).
 */
async function presyncMigration(
  root: string,
  image: GuestImage,
  disk: string,
  tracker: "qmp" | "scan",
  variant: Variant,
  round: number,
) {
  const dir = `${root}/presync-${tracker}-${variant.name}-${round}`;
  await Deno.mkdir(`${dir}/src`, { recursive: true });
  await Deno.mkdir(`${dir}/dst`);
  const source = `${dir}/source.img`;
  await Deno.copyFile(disk, source);
  await using src = await startGuest({
    image,
    dir: `${dir}/src`,
    disk: source,
    mode: "workload",
    memoryMiB: ramMiB,
    qmpMonitors: 3,
  });
  const cluster = await Cluster.start({
    root: dir,
    image: tracker === "qmp" ? `qmp:unix:${src.qemu.qmp[2]}#virtio0` : source,
    wan: { up: link, down: link },
    agentArgs: ["--interval", "5"],
    idleTimeoutSeconds: 10,
    main: variant.main,
  });
  let exporter: PresyncProcess | null = null;
  try {
    await src.waitFor(/PRESYNC-ROUND 2 durable/, 300_000);
    const syncStart = performance.now();
    await cluster.waitFor(
      "the pre-sync to catch up",
      async () => Number((await cluster.volumeStatus()).committedGeneration) >= 3,
      900_000,
    );
    const preSyncSeconds = (performance.now() - syncStart) / 1000;
    const sq = await qmpOf(src, 1);
    const ram = values["skip-ram-match"]
      ? null
      : await ramInDisk(sq, `${dir}/store/vm/image`, `${dir}/ram.dump`);
    const nbd = `${dir}/dst/disk.sock`;
    const incoming = `${dir}/dst/incoming.sock`;
    exporter = cluster.startPostcopyExport(nbd, ["--writable", "--early", "--incoming", incoming]);
    const ex = exporter;
    await cluster.waitFor(
      "the early export",
      () => Promise.resolve(jsonLines(ex).some((e) => e.event === "listening")),
    );
    await using dst = await startGuest({
      image,
      dir: `${dir}/dst`,
      disk: `nbd+unix:///vm?socket=${nbd}`,
      mode: "workload",
      memoryMiB: ramMiB,
      extraArgs: ["-incoming", `unix:${incoming}`],
    });
    await pollUntil(
      "the incoming socket",
      async () => (await Deno.stat(incoming).catch(() => null))?.isSocket === true,
      60_000,
    );
    const dq = await qmpOf(dst);
    const steps: Step[] = [];
    recordEvents(sq, "source", steps);
    recordEvents(dq, "destination", steps);
    // The destination's MIGRATION events, when QEMU lets them be turned on while incoming.
    const destinationEvents = await dq.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "events", state: true }],
    }).then(() => true, () => false);
    if (values["downtime-limit"]) {
      await sq.execute("migrate-set-parameters", {
        "downtime-limit": Number(values["downtime-limit"]),
      });
    }
    const pause = watchPause(sq, dq);
    const migrate = new PresyncProcess([
      "migrate",
      "vm",
      "--qmp",
      src.qemu.qmp[0],
      "--control",
      cluster.agentControl,
      "--timeout",
      "900",
      "--json",
    ], { main: variant.main });
    const status = await migrate.wait(960_000, "presync migrate");
    if (status.code !== 0) throw new Error(`presync migrate failed:\n${migrate.output}`);
    const report = jsonLines(migrate).at(-1)! as {
      totalSeconds: number;
      qemuDowntimeMs: number;
      switchoverMs: number;
      memoryBytes: number;
      memoryWireBytes: number;
      diskBytes: number;
    };
    const guestPauseMs = await pause;
    await sq.close();
    await dq.close();
    // The guest goes on at the destination.
    await dst.waitFor(/PRESYNC-ROUND \d+ durable/, 300_000);
    const timeline = timelineOf([
      ...steps,
      ...loggedSteps(cluster.agent, "source"),
      ...loggedSteps(cluster.serve, "destination"),
    ]);
    const at = (what: string) => timeline.find((s) => s.what === what)?.ms ?? NaN;
    const tailMs = at("destination QMP RESUME") - at("source QMP MIGRATION completed");
    return {
      ...report,
      tracker,
      variant: variant.name,
      round,
      guestPauseMs,
      tailMs,
      preSyncSeconds,
      ram,
      destinationEvents,
      timeline,
    };
  } finally {
    await exporter?.kill("SIGTERM");
    await cluster.stop();
  }
}

const root = await Deno.makeTempDir({ prefix: "presync-bench-migrate-" });
try {
  const prng = new Prng(Number(values.seed));
  const image = await buildGuest();
  const disk = await template(root, prng);
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  console.log(
    `guest: ${diskMiB} MiB disk, ${ramMiB} MiB RAM, writing files; link ` +
      `${values["rate-mbit"]} Mbit/s, ${values["rtt-ms"]} ms RTT; load ${load}`,
  );
  const ours: Variant = { name: "ours" };
  const variants: Variant[] = values.baseline
    ? [{ name: "baseline", main: `${values.baseline}/agent/main.ts` }, ours]
    : [ours];
  const runs: Awaited<ReturnType<typeof presyncMigration>>[] = [];
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const tracker of trackers) {
      // Alternating which goes first, so a drift in the machine's load favours neither.
      const order = round % 2 === 1 ? variants : [...variants].reverse();
      for (const variant of order) {
        const run = await presyncMigration(root, image, disk, tracker, variant, round);
        console.log(
          `presync migrate (${tracker} tracker, ${variant.name}, round ${round}): ` +
            JSON.stringify(run),
        );
        runs.push(run);
      }
    }
  }
  // QEMU's mirror may never be ready while the guest writes: then there is no comparison.
  const qemu = values["skip-qemu"]
    ? null
    : await qemuStorageMigration(root, image, disk).catch((err) => {
      console.log(`QEMU storage migration did not finish: ${err.message}`);
      return null;
    });
  if (qemu) console.log(`QEMU storage migration: ${JSON.stringify(qemu)}`);
  const rttMs = Number(values["rtt-ms"]);
  const rows = runs.map((r) =>
    `| presync migrate, ${r.tracker} tracker, ${r.variant} (round ${r.round}) | ` +
    `${r.totalSeconds.toFixed(1)} | ${r.qemuDowntimeMs} (final cut ${r.switchoverMs}) | ` +
    `${r.guestPauseMs} | ${r.tailMs} | ${r.memoryBytes} (${r.memoryWireBytes} on the link) | ` +
    `${r.diskBytes} |`
  );
  if (qemu) {
    rows.push(
      `| QEMU drive-mirror + migrate | ${qemu.totalSeconds.toFixed(1)} | ` +
        `${qemu.qemuDowntimeMs} | ${qemu.guestPauseMs} | — | ${qemu.memoryBytes} | ` +
        `(whole disk) |`,
    );
  }
  console.log(
    `\n| contender | total s | QEMU downtime ms | guest pause ms | tail ms | memory bytes | ` +
      `disk bytes |\n| --- | --- | --- | --- | --- | --- | --- |\n${rows.join("\n")}\n`,
  );
  for (const r of runs) {
    console.log(
      `\n${r.tracker} tracker, ${r.variant}, round ${r.round}: the switchover on one clock ` +
        `(ms after the source's STOP):\n` +
        `| ms | step |\n| --- | --- |\n` +
        r.timeline.map((s) => `| ${s.ms} | ${s.what} |`).join("\n") + "\n",
    );
  }
  if (values.baseline) {
    const median = (xs: number[]) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const mid = Math.floor(sorted.length / 2);
      return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    };
    for (const tracker of trackers) {
      const of = (variant: string, key: "guestPauseMs" | "tailMs" | "qemuDowntimeMs") =>
        median(
          runs.filter((r) => r.tracker === tracker && r.variant === variant).map((r) => r[key]),
        );
      const keys = ["guestPauseMs", "tailMs", "qemuDowntimeMs"] as const;
      console.log(
        `${tracker}, medians of ${values.rounds} round(s), ours / baseline: ` +
          keys.map((k) =>
            `${k} ${of("ours", k)} / ${of("baseline", k)} = ` +
            (of("ours", k) / of("baseline", k)).toFixed(2)
          ).join("; "),
      );
    }
  }
  for (const r of runs) {
    const line = [
      `${r.tracker}, ${r.variant}, round ${r.round}: ` +
      (r.ram
        ? `RAM pages found in the disk ${(r.ram.share * 100).toFixed(1)} % of ` +
          `${r.ram.nonZeroRamPages} non-zero pages`
        : "RAM pages not matched (--skip-ram-match)"),
    ];
    if (qemu) {
      line.push(
        `total ratio presync / QEMU ${(r.totalSeconds / qemu.totalSeconds).toFixed(2)}`,
        `guest pause ${r.guestPauseMs} ms against QEMU's ${qemu.guestPauseMs} ms + one RTT ` +
          `(${rttMs} ms) = ${qemu.guestPauseMs + rttMs} ms`,
        `QEMU downtime ${r.qemuDowntimeMs} ms against ${qemu.qemuDowntimeMs} + ${rttMs} = ` +
          `${qemu.qemuDowntimeMs + rttMs} ms`,
      );
    }
    console.log(line.join("; "));
  }
  console.log(`load at the end: ${(await Deno.readTextFile("/proc/loadavg")).trim()}`);
} finally {
  await Deno.remove(root, { recursive: true });
}
