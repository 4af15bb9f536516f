import assert from "node:assert/strict";
import { QmpClient } from "../qemu/mod.ts";
import { Cluster, jsonLines, PresyncProcess } from "../../fixtures/cluster.ts";
import { needQemu, type QemuProcess, startQemu } from "../../fixtures/guest/qemu_process.ts";
import { needTools } from "../../fixtures/nbd_tools.ts";
import { type Prng, withSeed } from "../../fixtures/prng.ts";
import { hashFile } from "../../fixtures/workload.ts";

const MiB = 1024 * 1024;
const needs = await (async () => {
  const a = await needQemu();
  const b = await needTools(["qemu-img"]);
  return { ignore: a.ignore || b.ignore };
})();

/** Writes `bytes` of `pattern` at `offset` through QEMU's drive0, as a guest would. */
async function guestWrite(qmp: QmpClient, offset: number, bytes: number, pattern: number) {
  const out = await qmp.execute("human-monitor-command", {
    "command-line": `qemu-io drive0 "write -P 0x${pattern.toString(16)} ${offset} ${bytes}"`,
  });
  assert.doesNotMatch(String(out), /error|failed/i, String(out));
}

/** Reads through QEMU's drive0 and checks the pattern; returns qemu-io's complaint, if any. */
async function guestCheck(qmp: QmpClient, offset: number, bytes: number, pattern: number) {
  return String(
    await qmp.execute("human-monitor-command", {
      "command-line": `qemu-io drive0 "read -P 0x${pattern.toString(16)} ${offset} ${bytes}"`,
    }, { timeoutMs: 60_000 }),
  );
}

/**
 * A synced 32 MiB volume, its VM running at the source (64 MiB of RAM, 16 MiB of them random,
 * no guest OS; writes go
 * through its drive), and at the destination an early export with `--incoming` and a QEMU
 * waiting for the migration on it.
 */
async function rig(prng: Prng, link: { delayMs: number; rateBitsPerSecond: number }) {
  const root = await Deno.makeTempDir({ prefix: "presync-migrate-" });
  const image = `${root}/source.img`;
  await Deno.writeFile(image, prng.fill(new Uint8Array(8 * MiB)));
  await Deno.truncate(image, 32 * MiB);
  const processes: QemuProcess[] = [];
  const qmps: QmpClient[] = [];
  let cluster: Cluster | null = null;
  let exporter: PresyncProcess | null = null;
  const dispose = async () => {
    for (const q of qmps) await q.close().catch(() => {});
    for (const p of processes) await p.kill();
    await exporter?.kill("SIGTERM");
    await cluster?.stop();
    await Deno.remove(root, { recursive: true });
  };
  try {
    const wanLink = { ...link, queueBytes: 256 * 1024 };
    cluster = await Cluster.start({
      root,
      image,
      wan: { up: wanLink, down: wanLink },
      // No background cuts after the first: what is written next travels in the final cut.
      agentArgs: ["--interval", "3600"],
    });
    const c = cluster;
    await c.waitFor(
      "generation 1",
      async () => Number((await c.volumeStatus()).committedGeneration) >= 1,
      120_000,
    );
    // 16 MiB of the RAM hold seeded random bytes (QEMU sends zero pages as flags only).
    await Deno.writeFile(`${root}/ram.bin`, prng.fill(new Uint8Array(16 * MiB)));
    const machine = [
      "-machine",
      "pc",
      "-m",
      "64M",
      "-display",
      "none",
      "-device",
      `loader,file=${root}/ram.bin,addr=0x1000000,force-raw=on`,
    ];
    await Deno.mkdir(`${root}/src`);
    await Deno.mkdir(`${root}/dst`);
    // Two monitors: QEMU serves one client per QMP socket; the agent takes the first.
    const source = await startQemu({
      dir: `${root}/src`,
      qmpMonitors: 2,
      args: [...machine, "-drive", `if=none,id=drive0,file=${image},format=raw,cache=none`],
    });
    processes.push(source);
    const sourceQmp = await QmpClient.connect(source.qmp[1]);
    qmps.push(sourceQmp);
    const disk = `${root}/dst/disk.sock`;
    const incoming = `${root}/dst/incoming.sock`;
    exporter = c.startPostcopyExport(disk, ["--writable", "--early", "--incoming", incoming]);
    const ex = exporter;
    await c.waitFor(
      "the early export",
      () => Promise.resolve(jsonLines(ex).some((e) => e.event === "listening")),
    );
    const destination = await startQemu({
      dir: `${root}/dst`,
      args: [
        ...machine,
        "-drive",
        `if=none,id=drive0,file=nbd+unix:///vm?socket=${disk},format=raw`,
        "-incoming",
        `unix:${incoming}`,
      ],
    });
    processes.push(destination);
    const destinationQmp = await QmpClient.connect(destination.qmp[0]);
    qmps.push(destinationQmp);
    return {
      root,
      image,
      cluster: c,
      exporter: ex,
      source,
      sourceQmp,
      destination,
      destinationQmp,
      migrate: (args: string[] = []) =>
        new PresyncProcess([
          "migrate",
          "vm",
          "--qmp",
          source.qmp[0],
          "--control",
          c.agentControl,
          "--json",
          "--timeout",
          "120",
          ...args,
        ]),
      [Symbol.asyncDispose]: dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}

Deno.test({
  name: "presync migrate: memory over the session, final disk cut at the switchover; the " +
    "destination VM runs on exactly the source's last disk",
  ...needs,
  fn: () =>
    withSeed(async (prng) => {
      await using r = await rig(prng, { delayMs: 10, rateBitsPerSecond: 400e6 });
      // Written after the pre-sync, before the migration: only the final generation has it.
      await guestWrite(r.sourceQmp, 3 * MiB, 2 * MiB, 0x33);
      await guestWrite(r.sourceQmp, 30 * MiB, 64 * 1024, 0x44);
      const migrate = r.migrate();
      const status = await migrate.wait(180_000, "presync migrate");
      assert.equal(status.code, 0, migrate.output);
      const report = jsonLines(migrate).at(-1)!;
      assert.equal(report.verified, true, JSON.stringify(report));
      assert.ok(Number(report.memoryBytes) > 0, JSON.stringify(report));
      assert.ok(Number(report.qemuDowntimeMs) > 0, JSON.stringify(report));
      // The final generation carried the writes (patterns compress to little).
      assert.ok(Number(report.diskBytes) > 0, JSON.stringify(report));
      assert.ok(Number(report.generation) >= 2, JSON.stringify(report));
      assert.ok(Number(report.memoryBytes) > 16 * MiB, JSON.stringify(report));
      // A VM in one place: the source is paused for good, the destination runs.
      const src = await r.sourceQmp.execute("query-status") as { status: string };
      assert.equal(src.status, "postmigrate");
      const dst = await r.destinationQmp.execute("query-status") as { running: boolean };
      assert.equal(dst.running, true);
      // The destination's disk is the source's at the switchover.
      assert.doesNotMatch(await guestCheck(r.destinationQmp, 3 * MiB, 2 * MiB, 0x33), /fail/i);
      assert.doesNotMatch(await guestCheck(r.destinationQmp, 30 * MiB, 64 * 1024, 0x44), /fail/i);
      await r.sourceQmp.execute("human-monitor-command", {
        "command-line": "qemu-io drive0 flush",
      });
      assert.equal(await hashFile(`${r.root}/store/vm/image`), await hashFile(r.image));
      const served = jsonLines(r.exporter).find((e) => e.event === "serving");
      assert.ok(served, r.exporter.output);
    }),
});

Deno.test({
  name: "presync migrate: a link cut during the memory migration leaves the source VM " +
    "running and the destination QEMU never runs",
  ...needs,
  fn: () =>
    withSeed(async (prng) => {
      await using r = await rig(prng, { delayMs: 10, rateBitsPerSecond: 400e6 });
      // 4 MB/s: 64 MiB of RAM take seconds, the cut lands in the memory migration.
      const migrate = r.migrate(["--max-bandwidth", "4MB/s"]);
      const deadline = Date.now() + 60_000;
      while (true) {
        const info = await r.sourceQmp.execute("query-migrate") as {
          status?: string;
          ram?: { transferred: number };
        };
        if ((info.ram?.transferred ?? 0) > 2 * MiB) break;
        assert.ok(Date.now() < deadline, `the migration did not start: ${migrate.output}`);
        await new Promise((res) => setTimeout(res, 50));
      }
      r.cluster.emu.cut("reset");
      const status = await migrate.wait(120_000, "presync migrate");
      assert.notEqual(status.code, 0);
      assert.match(migrate.output, /MIGRATION_ABORTED/);
      const src = await r.sourceQmp.execute("query-status") as { running: boolean };
      assert.equal(src.running, true, "the source VM must run on");
      const ended = await Promise.race([
        r.destination.status.then(() => "exited"),
        new Promise<string>((res) => setTimeout(() => res("running"), 30_000)),
      ]);
      assert.equal(ended, "exited", `destination QEMU: ${r.destination.stderr()}`);
    }),
});
