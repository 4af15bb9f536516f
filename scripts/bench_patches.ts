/**
 * Patches benchmark (issue 17 item 1): one generation of scattered 4 KiB writes (through the
 * nbd tracker's NBD server, in its worker, as the agent runs it) sent over an in-process
 * session to a sync server and store, twice from the same seeded image and writes: with the
 * tracker's page masks (patches) and with them hidden (whole 64 KiB blocks, the baseline).
 * Prints bytes on the wire, send time (CPU and disk of both ends, no WAN) and their ratios.
 *
 * ```sh
 * npx -y deno@2.9.6 run -A scripts/bench_patches.ts [--writes 2000] [--size-mib 256] [--seed 1]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createNoneCodec } from "../plugins/codec-none/mod.ts";
import { createZstdCodec } from "../plugins/codec-zstd/mod.ts";
import { DirectoryBackend } from "../plugins/store-directory/mod.ts";
import { WorkerNbdTracker } from "../plugins/tracker-nbd/worker_tracker.ts";
import { fillText } from "../fixtures/data.ts";
import { Prng } from "../fixtures/prng.ts";
import { sessionPair } from "../fixtures/session_pair.ts";
import { PacedDestination } from "../agent/daemon/paced_destination.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { NbdClient } from "../agent/nbd/mod.ts";
import { RemoteDestination } from "../agent/net/remote_destination.ts";
import { SyncServer } from "../agent/net/sync_server.ts";
import { SourceState } from "../agent/source/source_state.ts";
import { ReplicaStore } from "../agent/store/replica_store.ts";
import { sendGeneration } from "../agent/sync/send_generation.ts";
import type { Cut } from "../agent/tracker.ts";
import { newVolumeIdentity } from "../agent/volume/volume_identity.ts";
import { Priority } from "../agent/wire/frame.ts";

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
const fs = new DenoFileSystem();
const codec = createZstdCodec();

interface Run {
  wireBytes: number;
  seconds: number;
  blocks: number;
}

/** Seeds a replica, applies the writes through NBD, then times sending that generation. */
async function run(seed: number, sizeBytes: number, writes: number, pages: boolean): Promise<Run> {
  const root = await Deno.makeTempDir({ prefix: "presync-bench-patches-" });
  const prng = new Prng(seed);
  try {
    const image = `${root}/source.img`;
    // Half text-like (compressible), half random, like a VM's disk.
    const data = prng.fill(new Uint8Array(sizeBytes));
    fillText(prng, data.subarray(0, sizeBytes / 2));
    await Deno.writeFile(image, data);
    const server = new SyncServer(
      new ReplicaStore(new DirectoryBackend(fs, `${root}/store`)),
      [codec, createNoneCodec()],
      () => {},
    );
    const identity = newVolumeIdentity("vm", sizeBytes, BLOCK);
    const state = await SourceState.init(fs, `${root}/state`, identity);
    const tracker = await WorkerNbdTracker.create({
      imagePath: image,
      identity,
      stateDir: `${root}/state`,
      listen: [{ transport: "unix", path: `${root}/nbd.sock` }],
    });
    await using pair = await sessionPair();
    server.serveSession(pair.server);
    const { remote } = await RemoteDestination.open(
      pair.client.openStream(Priority.BULK),
      identity,
    );
    const counters = { rawBytes: 0, wireBytes: 0 };
    const destination = new PacedDestination(remote, {
      codec,
      counters,
      pace: () => Promise.resolve(),
    });
    const send = async (cut: Cut) => {
      await state.recordCut(cut.dirty, Date.now());
      const report = await sendGeneration(state, cut, destination);
      report.sent.free();
      await cut.release();
    };
    try {
      await send(await tracker.cut());
      const client = await NbdClient.connect(tracker.addresses[0], "vm");
      for (let i = 0; i < writes; i++) {
        const page = prng.int(sizeBytes / 4096);
        const bytes = prng.fill(new Uint8Array(4096));
        if (page * 4096 < sizeBytes / 2) fillText(prng, bytes);
        await client.write(page * 4096, bytes);
      }
      await client.close();
      const cut = await tracker.cut();
      const blocks = cut.dirty.popcount();
      const sent: Cut = pages ? cut : {
        dirty: cut.dirty,
        pointInTime: cut.pointInTime,
        read: (first, count) => cut.read(first, count),
        release: () => cut.release(),
      };
      const wireBefore = counters.wireBytes;
      const started = performance.now();
      await send(sent);
      return {
        wireBytes: counters.wireBytes - wireBefore,
        seconds: (performance.now() - started) / 1000,
        blocks,
      };
    } finally {
      await remote.close();
      await tracker.close();
      state.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      writes: { type: "string", default: "2000" },
      "size-mib": { type: "string", default: "256" },
      seed: { type: "string", default: "1" },
    },
  });
  const writes = Number(values.writes);
  const size = Number(values["size-mib"]) * MiB;
  const seed = Number(values.seed);
  const whole = await run(seed, size, writes, false);
  const patched = await run(seed, size, writes, true);
  const load = Deno.loadavg().map((l) => l.toFixed(1)).join(" ");
  console.log(
    `${writes} scattered 4 KiB writes into a ${values["size-mib"]} MiB image (${patched.blocks} ` +
      `dirty blocks), seed ${seed}, load ${load}\n`,
  );
  console.log("| sent as | wire bytes | wire / write | send s | blocks/s |");
  console.log("| ------- | ---------: | -----------: | -----: | -------: |");
  for (const [name, r] of [["whole 64 KiB blocks", whole], ["page patches", patched]] as const) {
    console.log(
      `| ${name} | ${r.wireBytes} | ${(r.wireBytes / writes).toFixed(0)} | ${
        r.seconds.toFixed(2)
      } | ${(r.blocks / r.seconds).toFixed(0)} |`,
    );
  }
  console.log(
    `\npatches / whole: wire ${(patched.wireBytes / whole.wireBytes).toFixed(3)}×, time ${
      (patched.seconds / whole.seconds).toFixed(2)
    }×`,
  );
}
