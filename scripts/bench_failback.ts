/**
 * Fail-back of N MiB written after a relocation vs a full copy of the volume, both through
 * the WAN emulator, one run each, side by side:
 *
 *     deno run -A scripts/bench_failback.ts [VOLUME_MIB] [WRITTEN_MIB] [MBIT] [RTT_MS]
 *
 * The volume is incompressible (random); the full copy is `presync failback --full` onto an
 * empty image (what a re-sync without the proof costs).
 *
 * @module
 */

import { freePort, jsonLines, PresyncProcess } from "../fixtures/cluster.ts";
import { Prng } from "../fixtures/prng.ts";
import { DirectoryBackend } from "../plugins/store-directory/mod.ts";
import { openReplica } from "../agent/export/serve_replica.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { writeNewKey } from "../agent/key_file.ts";
import { ReplicaStore } from "../agent/store/replica_store.ts";
import { syncLocal } from "../agent/sync/local_sync.ts";
import { WanEmu } from "./wan_emu.ts";

const [volumeMib, writtenMib, mbit, rttMs] = [256, 16, 100, 40].map((d, i) =>
  Number(Deno.args[i] ?? d)
);
const MIB = 1024 * 1024;
const fs = new DenoFileSystem();
const root = await Deno.makeTempDir({ prefix: "presync-bench-failback-" });
const prng = new Prng(16);

async function run(args: string[]): Promise<PresyncProcess> {
  const p = new PresyncProcess(args);
  const status = await p.wait(600_000);
  if (status.code !== 0) throw new Error(`presync ${args[0]} failed:\n${p.output}`);
  return p;
}

try {
  const image = `${root}/a.img`;
  const data = new Uint8Array(volumeMib * MIB);
  for (let at = 0; at < data.length; at += 64 * MIB) prng.fill(data.subarray(at, at + 64 * MIB));
  await Deno.writeFile(image, data);
  await syncLocal({
    imagePath: image,
    storeDir: `${root}/b`,
    volume: "vm",
    stateDir: `${root}/agent-state`,
    fs,
  });
  const storeB = new ReplicaStore(new DirectoryBackend(fs, `${root}/b`));
  const opened = await openReplica({ store: storeB, volume: "vm", writable: true });
  const written = new Uint8Array(writtenMib * MIB);
  prng.fill(written);
  await opened.export.write!(7 * MIB, written);
  await opened.export.flush!();
  await opened.close();
  await Deno.writeFile(`${root}/empty.img`, new Uint8Array(0));
  await Deno.truncate(`${root}/empty.img`, volumeMib * MIB);
  await writeNewKey(`${root}/key`);
  const link = { rateBitsPerSecond: mbit * 1_000_000, delayMs: rttMs / 2 };
  const results: Record<string, unknown>[] = [];
  for (
    const [name, target, full] of [["failback", image, false], [
      "full copy",
      `${root}/empty.img`,
      true,
    ]] as const
  ) {
    const store = `${root}/a-store-${full ? "full" : "fb"}`;
    await run([
      "failback",
      "vm",
      "--adopt",
      target,
      "--agent-state",
      `${root}/agent-state`,
      "--store",
      store,
      ...(full ? ["--full"] : []),
    ]);
    const port = freePort();
    const serve = new PresyncProcess([
      "serve",
      "--store",
      store,
      "--listen",
      `127.0.0.1:${port}`,
      "--key-file",
      `${root}/key`,
      "--control",
      `${root}/serve-${port}.sock`,
      "--transport",
      "tcp",
    ]);
    const emu = WanEmu.start({ target: { hostname: "127.0.0.1", port }, up: link, down: link });
    try {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const sender = await run([
        "failback",
        "vm",
        "--to",
        `${emu.addr.hostname}:${emu.addr.port}`,
        "--key-file",
        `${root}/key`,
        "--store",
        `${root}/b`,
        "--state",
        `${root}/fb-state-${full ? "full" : "fb"}`,
        "--transport",
        "tcp",
        "--json",
        ...(full ? ["--full"] : []),
      ]);
      const r = jsonLines(sender).at(-1)!;
      results.push({
        name,
        blocks: r.blocks,
        bytesSent: r.bytesSent,
        wireBytes: r.wireBytes,
        seconds: r.seconds,
      });
    } finally {
      await serve.kill("SIGTERM");
      await emu.close();
    }
  }
  console.log(
    JSON.stringify(
      {
        volumeMib,
        writtenMib,
        mbit,
        rttMs,
        loadavg: Deno.readTextFileSync("/proc/loadavg").trim(),
        results,
      },
      null,
      2,
    ),
  );
} finally {
  await Deno.remove(root, { recursive: true });
}
