import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import {
  agentArgs,
  controlFetch,
  freePort,
  jsonLines,
  PresyncProcess,
  runPresync,
  serveArgs,
} from "../../fixtures/cluster.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { LIVE_DIRTY_FILE } from "../../plugins/tracker-nbd/nbd_tracker.ts";
import { WanEmu } from "../../scripts/wan_emu.ts";
import { openReplica } from "../export/serve_replica.ts";
import { ErrorCode } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { writeNewKey } from "../key_file.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { syncLocal } from "../sync/local_sync.ts";

const SIZE = 32 * 1024 * 1024;
const fs = new DenoFileSystem();

async function until(what: string, check: () => Promise<boolean>, processes: PresyncProcess[]) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}\n${processes.map((p) => p.output).join("\n")}`);
}

/** Site A's image `root/a.img`: its first half random, the rest zeros. */
async function sourceImage(prng: Prng, root: string): Promise<string> {
  const image = `${root}/a.img`;
  const data = new Uint8Array(SIZE);
  prng.fill(data.subarray(0, SIZE / 2));
  await Deno.writeFile(image, data);
  return image;
}

/**
 * Site B after a relocation: the image `root/a.img` (half random) synced into B's store
 * (`root/store`) with A's agent state at `root/state/vm` (as `presync agent --state
 * root/state` leaves it), then `written` bytes of the VM at B written through the overlay
 * at `at`; and a key. Returns the image's path and B's store.
 */
async function relocated(prng: Prng, root: string, written: number, at: number) {
  const image = await sourceImage(prng, root);
  await syncLocal({
    imagePath: image,
    storeDir: `${root}/store`,
    volume: "vm",
    stateDir: `${root}/state/vm`,
    fs,
  });
  const storeB = new ReplicaStore(new DirectoryBackend(fs, `${root}/store`));
  const opened = await openReplica({ store: storeB, volume: "vm", writable: true });
  await opened.export.write!(at, prng.fill(new Uint8Array(written)));
  await opened.export.flush!();
  await opened.close();
  await writeNewKey(`${root}/key`);
  return { image, storeB };
}

/** `presync failback vm --adopt` of `image` into A's store `root/a-store`. */
function adoptArgs(root: string, image: string): string[] {
  return [
    "failback",
    "vm",
    "--adopt",
    image,
    "--agent-state",
    `${root}/state/vm`,
    "--store",
    `${root}/a-store`,
  ];
}

/** `presync serve` of A's store on 127.0.0.1:`port` (TCP), with `extra` appended. */
function serveAArgs(root: string, port: number, extra: string[] = []): string[] {
  return [
    "serve",
    "--store",
    `${root}/a-store`,
    "--listen",
    `127.0.0.1:${port}`,
    "--key-file",
    `${root}/key`,
    "--control",
    `${root}/serve-a.sock`,
    "--transport",
    "tcp",
    ...extra,
  ];
}

/** `presync failback vm --to` from B's store to `to` (TCP, JSON), with `extra` appended. */
function senderArgs(root: string, to: string, extra: string[] = []): string[] {
  return [
    "failback",
    "vm",
    "--to",
    to,
    "--key-file",
    `${root}/key`,
    "--store",
    `${root}/store`,
    "--state",
    `${root}/fb-state`,
    "--transport",
    "tcp",
    "--json",
    ...extra,
  ];
}

seededTest(
  "presync failback over a slow link survives kill -9 of the sender and of serve",
  async (prng) => {
    const root = await Deno.makeTempDir({ prefix: "presync-failback-it-" });
    const processes: PresyncProcess[] = [];
    let emu: WanEmu | null = null;
    try {
      // What the VM wrote at the destination: 12 MiB through the writable overlay.
      const { image, storeB } = await relocated(prng, root, 12 * 1024 * 1024, 3 * 1024 * 1024 + 17);
      await runPresync(adoptArgs(root, image), { timeoutMs: 300_000 });
      const port = freePort();
      const serve = () => new PresyncProcess(serveAArgs(root, port, ["--idle-timeout", "3"]));
      let server = serve();
      processes.push(server);
      // 16 Mbit/s: the 12 MiB take about 6 s, time to kill both sides on the way even on a
      // loaded machine (at 40 Mbit/s a CI run once saw the second sender finish before serve
      // was killed: the first kill had come late, at 127 of 193 blocks).
      const link = { rateBitsPerSecond: 16_000_000, delayMs: 5 };
      emu = WanEmu.start({ target: { hostname: "127.0.0.1", port }, up: link, down: link });
      const sender = () =>
        new PresyncProcess(
          senderArgs(root, `${emu!.addr.hostname}:${emu!.addr.port}`, ["--idle-timeout", "3"]),
        );
      const received = `${root}/a-store/vm/staging/received`;
      const first = sender();
      processes.push(first);
      await until(
        "a first acknowledgement",
        async () => (await Deno.stat(received)).size > 0,
        processes,
      );
      // The link drops what it still holds of the first sender, as a dead peer's socket would,
      // so the bytes counted below are the second sender's.
      emu.cut("reset");
      await first.kill("SIGKILL");
      emu.restore();
      // serve acknowledges (writes `received`) at its flushes, the first seen at 127 of the 193
      // blocks: the second sender has the rest to send. serve is killed once 256 KiB of that
      // has crossed, the link holding every byte from then on, so the second sender cannot
      // finish first (waiting for more blocks in serve's log came too late: the log grows at
      // the flushes, and the next one was the last).
      const sentBefore = emu.counters().up.bytesOut;
      const second = sender();
      processes.push(second);
      await until(
        "the second sender's first 256 KiB",
        () => Promise.resolve(emu!.counters().up.bytesOut > sentBefore + 256 * 1024),
        processes,
      );
      emu.cut("blackhole");
      await server.kill("SIGKILL");
      emu.restore();
      server = serve();
      processes.push(server);
      assert.equal((await second.wait(120_000)).code, 0, second.output);
      const report = jsonLines(second).at(-1)!;
      assert.equal(report.generation, 2);
      assert.ok((report.attempts as number) >= 2, second.output);
      assert.ok((report.alreadyStaged as number) > 0);
      // The original image is now exactly what the VM saw at the destination.
      const opened = await openReplica({ store: storeB, volume: "vm", writable: true });
      const expected = await opened.export.read(0, SIZE);
      await opened.close();
      const actual = await Deno.readFile(image);
      assert.ok(actual.every((b, i) => b === expected[i]), "original image != replica + overlay");
    } finally {
      for (const p of processes) if (!p.exited) await p.kill("SIGTERM");
      await emu?.close();
      await Deno.remove(root, { recursive: true });
    }
  },
);

seededTest(
  "after a fail-back the original site's agent protects the volume again: only what the VM " +
    "wrote away crosses back, and the other site's old overlay is refused over the new generation",
  async (prng) => {
    const root = await Deno.makeTempDir({ prefix: "presync-reprotect-it-" });
    await Deno.chmod(root, 0o700);
    const processes: PresyncProcess[] = [];
    try {
      const { image, storeB } = await relocated(prng, root, 3 * 1024 * 1024, 5 * 1024 * 1024 + 99);
      await runPresync(adoptArgs(root, image), { timeoutMs: 120_000 });
      const portA = freePort();
      const serveA = new PresyncProcess(serveAArgs(root, portA));
      processes.push(serveA);
      const failed = await runPresync(senderArgs(root, `127.0.0.1:${portA}`), {
        peer: serveA,
        timeoutMs: 120_000,
      });
      const report = jsonLines(failed).at(-1)!;
      await serveA.kill("SIGTERM");
      // The VM runs at A again; A's agent and B's serve start as before the relocation.
      const portB = freePort();
      processes.push(
        new PresyncProcess(serveArgs(root, portB, `${root}/serve-b.sock`, ["--transport", "tcp"])),
      );
      const control = `${root}/agent.sock`;
      const agent = new PresyncProcess(
        agentArgs(root, image, portB, control, ["--transport", "tcp", "--interval", "1"]),
      );
      processes.push(agent);
      await until("the agent to commit generation 2 at B", async () => {
        const all = await (await controlFetch(control, "GET", "/status")).json();
        const status = all.volumes[0];
        return status.committedGeneration === 2;
      }, processes);
      const expected = await Deno.readFile(image);
      const atB = await openReplica({ store: storeB, volume: "vm" });
      const actual = await atB.export.read(0, SIZE);
      await atB.close();
      assert.ok(actual.every((b, i) => b === expected[i]), "B's replica != the original image");
      // Only the fail-back's blocks crossed again (49 of 512), not the volume.
      const metrics = await (await controlFetch(control, "GET", "/metrics")).text();
      const sent = /^presync_sent_blocks_total\{[^}]*\} (\d+)$/m.exec(metrics);
      assert.ok(sent, metrics);
      assert.ok(
        Number(sent[1]) > 0 && Number(sent[1]) <= Number(report.blocks),
        `${sent[1]} blocks sent, the fail-back sent ${report.blocks}`,
      );
      await assertRejectsCode(
        openReplica({ store: storeB, volume: "vm", writable: true }),
        ErrorCode.OVERLAY_STALE,
      );
    } finally {
      for (const p of processes) if (!p.exited) await p.kill("SIGTERM");
      await Deno.remove(root, { recursive: true });
    }
  },
);

seededTest(
  "with the nbd tracker, an agent restarted after the adoption sends what the fail-back wrote " +
    "behind it (its change set saved at the clean stop is dropped, not trusted)",
  async (prng) => {
    const root = await Deno.makeTempDir({ prefix: "presync-reprotect-nbd-it-" });
    await Deno.chmod(root, 0o700);
    const processes: PresyncProcess[] = [];
    try {
      const image = await sourceImage(prng, root);
      await writeNewKey(`${root}/key`);
      const port = freePort();
      processes.push(
        new PresyncProcess(serveArgs(root, port, `${root}/serve-b.sock`, ["--transport", "tcp"])),
      );
      const control = `${root}/agent.sock`;
      const startAgent = () => {
        const agent = new PresyncProcess(agentArgs(root, image, port, control, [
          "--transport",
          "tcp",
          "--interval",
          "1",
          "--tracker",
          "nbd",
          "--nbd-listen",
          `unix:${root}/nbd.sock`,
        ]));
        processes.push(agent);
        return agent;
      };
      const committed = (generation: number) =>
        until(`generation ${generation} committed`, async () => {
          const all = await (await controlFetch(control, "GET", "/status")).json();
          return all.volumes[0].committedGeneration >= generation &&
            all.volumes[0].state === "idle";
        }, processes);
      const agent = startAgent();
      await committed(1);
      assert.equal((await agent.kill("SIGTERM")).success, true, agent.output);
      assert.ok(await fs.exists(`${root}/state/vm/${LIVE_DIRTY_FILE}`), "no set saved");
      await runPresync(adoptArgs(root, image), { timeoutMs: 300_000 });
      // What serve writes into the adopted image during the fail-back, behind the tracker.
      const file = await Deno.open(image, { write: true });
      await file.seek(7 * 1024 * 1024 + 3, Deno.SeekMode.Start);
      await file.write(prng.fill(new Uint8Array(1024 * 1024)));
      file.close();
      startAgent();
      await committed(2);
      const expected = await Deno.readFile(image);
      const storeB = new ReplicaStore(new DirectoryBackend(fs, `${root}/store`));
      const atB = await openReplica({ store: storeB, volume: "vm" });
      const actual = await atB.export.read(0, SIZE);
      await atB.close();
      assert.ok(actual.every((b, i) => b === expected[i]), "B's replica != the original image");
    } finally {
      for (const p of processes) if (!p.exited) await p.kill("SIGTERM");
      await Deno.remove(root, { recursive: true });
    }
  },
);
