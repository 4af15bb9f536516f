import assert from "node:assert/strict";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { ErrorCode } from "../errors.ts";
import { QmpClient } from "../qemu/mod.ts";
import { Priority } from "../wire/frame.ts";
import { memoryChannelPair } from "../wire/memory_channel.ts";
import { Session } from "../wire/session.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { needQemu, type QemuProcess, startQemu } from "../../fixtures/guest/qemu_process.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { migrateVm, receiveVm } from "./vm_migration.ts";

const MiB = 1024 * 1024;
const RAM = "64M";
const codec = createZstdCodec();
const tunnel = { codec, codecs: [codec] };
const qemu = await needQemu();

/**
 * A source VM (running, 64 MiB of RAM, 24 MiB of it loaded with seeded data: half random,
 * half a repeated page) and a destination QEMU waiting for its migration (`-incoming`, `-S`
 * so it stays paused and its memory can be compared), joined by two sessions over an
 * in-memory link.
 */
async function rig(prng: Prng) {
  const root = await Deno.makeTempDir({ prefix: "presync-migrate-" });
  const blob = new Uint8Array(24 * MiB);
  prng.fill(blob.subarray(0, 12 * MiB));
  const page = prng.fill(new Uint8Array(4096));
  for (let at = 12 * MiB; at < blob.length; at += 4096) blob.set(page, at);
  await Deno.writeFile(`${root}/blob`, blob);
  const machine = [
    "-machine",
    "pc",
    "-m",
    RAM,
    "-display",
    "none",
    "-device",
    `loader,file=${root}/blob,addr=0x1000000,force-raw=on`,
  ];
  const processes: QemuProcess[] = [];
  const sessions: Session[] = [];
  const qmps: QmpClient[] = [];
  const dispose = async () => {
    for (const s of sessions) s.abort();
    for (const q of qmps) await q.close().catch(() => {});
    for (const p of processes) await p.kill();
    await Deno.remove(root, { recursive: true });
  };
  try {
    await Deno.mkdir(`${root}/src`);
    await Deno.mkdir(`${root}/dst`);
    const source = await startQemu({ dir: `${root}/src`, args: machine });
    processes.push(source);
    const incoming = `${root}/dst/incoming.sock`;
    const destination = await startQemu({
      dir: `${root}/dst`,
      args: [...machine, "-S", "-incoming", `unix:${incoming}`],
    });
    processes.push(destination);
    const sourceQmp = await QmpClient.connect(source.qmp[0]);
    const destinationQmp = await QmpClient.connect(destination.qmp[0]);
    qmps.push(sourceQmp, destinationQmp);
    const [a, b] = memoryChannelPair();
    const PSK = new Uint8Array(32).fill(3);
    const [client, server] = await Promise.all([
      Session.connect(a, { psk: PSK }),
      Session.accept(b, { psk: PSK }),
    ]);
    sessions.push(client, server);
    return {
      root,
      link: a,
      source,
      destination,
      sourceQmp,
      destinationQmp,
      client,
      server,
      incoming,
      [Symbol.asyncDispose]: dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}

type Rig = Awaited<ReturnType<typeof rig>>;

/** Starts both ends: the destination accepts the memory stream and feeds its QEMU. */
function start(r: Rig, maxBandwidthBytesPerSecond?: number, onSwitchover?: () => void) {
  const remote = r.client.openStream(Priority.MEMORY);
  const receiving = r.server.acceptStream().then((stream) => {
    assert.ok(stream && stream.priority === Priority.MEMORY);
    return receiveVm(r.incoming, stream, { ...tunnel, linkClosed: r.server.closed });
  });
  receiving.catch(() => {});
  const migrating = migrateVm({
    qmp: r.sourceQmp,
    socketPath: `${r.root}/src/migrate.sock`,
    remote,
    tunnel: { ...tunnel, linkClosed: r.client.closed },
    maxBandwidthBytesPerSecond,
    timeoutMs: 120_000,
    switchover: async () => {
      const status = await r.sourceQmp.execute("query-status") as { running: boolean };
      assert.equal(status.running, false, "the source VM runs at the switchover");
      onSwitchover?.();
    },
  });
  return { migrating, receiving };
}

Deno.test({
  name: "migrateVm: a VM's memory crosses the session's memory stream; the copy is exact",
  ...qemu,
  fn: () =>
    withSeed(async (prng) => {
      await using r = await rig(prng);
      let switchovers = 0;
      const { migrating, receiving } = start(r, undefined, () => switchovers++);
      const report = await migrating;
      await receiving;
      assert.equal(switchovers, 1);
      assert.ok(report.memoryBytes > 24 * MiB, JSON.stringify(report));
      assert.ok(report.qemuDowntimeMs > 0, JSON.stringify(report));
      assert.ok(
        report.tunnel.sentWireBytes < report.tunnel.sentRawBytes,
        `compressed: ${JSON.stringify(report.tunnel)}`,
      );
      const dst = await r.destinationQmp.execute("query-migrate") as { status: string };
      assert.equal(dst.status, "completed");
      const src = await r.sourceQmp.execute("query-status") as { status: string };
      assert.equal(src.status, "postmigrate", "the source VM must stay paused");
      for (
        const [qmp, file] of [[r.sourceQmp, "src.mem"], [r.destinationQmp, "dst.mem"]] as const
      ) {
        await qmp.execute("pmemsave", { val: 0, size: 64 * MiB, filename: `${r.root}/${file}` });
      }
      assert.equal(
        await hashFile(`${r.root}/dst.mem`),
        await hashFile(`${r.root}/src.mem`),
        "the destination's memory differs from the source's",
      );
    }),
});

Deno.test({
  name: "migrateVm: a link cut during the memory migration leaves the source VM running",
  ...qemu,
  fn: () =>
    withSeed(async (prng) => {
      await using r = await rig(prng);
      // 8 MB/s: the migration takes seconds, the cut lands in its middle.
      const { migrating, receiving } = start(r, 8_000_000);
      const deadline = Date.now() + 60_000;
      while (true) {
        const info = await r.sourceQmp.execute("query-migrate") as {
          ram?: { transferred: number };
        };
        if ((info.ram?.transferred ?? 0) > 4 * MiB) break;
        assert.ok(Date.now() < deadline, "the migration did not start");
        await new Promise((res) => setTimeout(res, 20));
      }
      r.link.close();
      await assertRejectsCode(migrating, ErrorCode.MIGRATION_ABORTED);
      await assertRejectsCode(receiving, ErrorCode.MIGRATION_ABORTED);
      const status = await r.sourceQmp.execute("query-status") as { running: boolean };
      assert.equal(status.running, true, "the source VM does not run after the failed migration");
      // The destination QEMU never got the end of the stream: its incoming migration failed
      // and it did not run.
      const ended = await Promise.race([
        r.destination.status.then(() => "exited"),
        new Promise<string>((res) => setTimeout(() => res("running"), 20_000)),
      ]);
      assert.equal(ended, "exited", `destination QEMU: ${r.destination.stderr()}`);
    }),
});
