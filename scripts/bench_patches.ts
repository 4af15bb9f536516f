/**
 * Patches benchmark (issue 17 item 1): one generation of scattered 4 KiB writes (through the
 * nbd tracker's NBD server, in its worker, as the agent runs it) sent to a sync server and
 * store, twice from the same seeded image and writes: with the tracker's page masks, and
 * with them hidden, so that the destination's page digests find the changed pages (as for
 * the scan tracker). Prints bytes on the wire, send time and their ratios. Without `--link`
 * the session is in-process (CPU and disk of both ends, no WAN); with `--link RATE:RTT` it
 * runs over TCP through the WAN emulator (both directions at RATE Mbit/s, RTT ms), and the
 * table adds the link's limit for the same wire bytes (÷ rate + 2 RTT). With `--volume-gib N`
 * the volume is N GiB: the data and the writes in its first `--size-mib`, holes after them
 * (the manifests, Merkle roots and commit of a large sparse disk).
 *
 * ```sh
 * npx -y deno@2.9.6 run -A scripts/bench_patches.ts [--writes 2000] [--size-mib 256] [--seed 1] \
 *   [--link 100:150] [--volume-gib 32]
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
import { sessionPair, TEST_PSK } from "../fixtures/session_pair.ts";
import { connChannel, Session } from "../agent/wire/mod.ts";
import { linkDirection, linkName, type LinkPoint } from "./_evac_contenders.ts";
import { WanEmu } from "./wan_emu.ts";
import { PacedDestination } from "../agent/daemon/paced_destination.ts";
import { DenoFileSystem } from "../agent/fs/deno_file_system.ts";
import { NbdClient } from "../agent/nbd/mod.ts";
import { RemoteDestination } from "../agent/net/remote_destination.ts";
import { SyncServer } from "../agent/net/sync_server.ts";
import { SourceState } from "../agent/source/source_state.ts";
import { ReplicaStore } from "../agent/store/replica_store.ts";
import { sendGeneration, type SendWaits } from "../agent/sync/send_generation.ts";
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
  /** Of `seconds`, from sending the commit to its reply. */
  commitSeconds: number;
  blocks: number;
  /** Where the send waited (`SendReport.waits`). */
  waits: SendWaits;
}

/** A client and a server session over TCP through the WAN emulator shaped as `link`. */
async function linkedSessionPair(link: LinkPoint) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const direction = linkDirection(link);
  const emu = WanEmu.start({
    target: listener.addr as Deno.NetAddr,
    up: direction,
    down: direction,
  });
  const options = { psk: TEST_PSK, logger: () => {} };
  const [client, server] = await Promise.all([
    Deno.connect(emu.addr).then((conn) => Session.connect(connChannel(conn), options)),
    listener.accept().then((conn) => Session.accept(connChannel(conn), options)),
  ]);
  listener.close();
  return {
    client,
    server,
    async [Symbol.asyncDispose]() {
      client.abort();
      server.abort();
      await emu.close();
    },
  };
}

/** Seeds a replica, applies the writes through NBD, then times sending that generation. */
async function run(
  seed: number,
  sizeBytes: number,
  volumeBytes: number,
  writes: number,
  pages: boolean,
  link: LinkPoint | null,
): Promise<Run> {
  const root = await Deno.makeTempDir({ prefix: "presync-bench-patches-" });
  const prng = new Prng(seed);
  try {
    const image = `${root}/source.img`;
    // Half text-like (compressible), half random, like a VM's disk; a volume larger than its
    // data is holes after it.
    const data = prng.fill(new Uint8Array(sizeBytes));
    fillText(prng, data.subarray(0, sizeBytes / 2));
    await Deno.writeFile(image, data);
    if (volumeBytes > sizeBytes) await Deno.truncate(image, volumeBytes);
    const server = new SyncServer(
      new ReplicaStore(new DirectoryBackend(fs, `${root}/store`)),
      [codec, createNoneCodec()],
      () => {},
    );
    const identity = newVolumeIdentity("vm", volumeBytes, BLOCK);
    const state = await SourceState.init(fs, `${root}/state`, identity);
    const tracker = await WorkerNbdTracker.create({
      imagePath: image,
      identity,
      stateDir: `${root}/state`,
      listen: [{ transport: "unix", path: `${root}/nbd.sock` }],
    });
    await using pair = link ? await linkedSessionPair(link) : await sessionPair();
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
      return report;
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
      const report = await send(sent);
      return {
        wireBytes: counters.wireBytes - wireBefore,
        seconds: (performance.now() - started) / 1000,
        commitSeconds: report.commitMs / 1000,
        blocks,
        waits: report.waits,
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
      "volume-gib": { type: "string" },
      seed: { type: "string", default: "1" },
      link: { type: "string" },
    },
  });
  let link: LinkPoint | null = null;
  if (values.link !== undefined) {
    const [rate, rtt] = values.link.split(":").map(Number);
    if (!(rate > 0) || !(rtt >= 0)) {
      throw new Error(`--link wants RATE_MBIT:RTT_MS, got ${values.link}`);
    }
    link = { rateBitsPerSecond: rate * 1e6, rttMs: rtt };
  }
  const writes = Number(values.writes);
  const size = Number(values["size-mib"]) * MiB;
  const seed = Number(values.seed);
  const volume = values["volume-gib"] === undefined
    ? size
    : Math.max(size, Number(values["volume-gib"]) * 1024 * MiB);
  const digests = await run(seed, size, volume, writes, false, link);
  const patched = await run(seed, size, volume, writes, true, link);
  const load = Deno.loadavg().map((l) => l.toFixed(1)).join(" ");
  console.log(
    `${writes} scattered 4 KiB writes into a ${values["size-mib"]} MiB image${
      volume > size ? ` (a ${volume / 1024 / MiB} GiB volume, holes after it)` : ""
    } (${patched.blocks} ` +
      `dirty blocks), seed ${seed}, ${
        link ? linkName(link) : "in-process session"
      }, load ${load}\n`,
  );
  const limit = (r: Run) =>
    link ? r.wireBytes * 8 / link.rateBitsPerSecond + 2 * link.rttMs / 1000 : 0;
  console.log(
    `| changed pages from | wire bytes | wire / write | send s | of which commit s | blocks/s | waited for source / link / digests / acks s |${
      link ? " link limit s | × limit |" : ""
    }`,
  );
  console.log(`| --- | ---: | ---: | ---: | ---: | ---: | --- |${link ? " ---: | ---: |" : ""}`);
  for (
    const [name, r] of [["destination's digests", digests], ["tracker's masks", patched]] as const
  ) {
    const limits = link ? ` ${limit(r).toFixed(2)} | ${(r.seconds / limit(r)).toFixed(2)}× |` : "";
    console.log(
      `| ${name} | ${r.wireBytes} | ${(r.wireBytes / writes).toFixed(0)} | ${
        r.seconds.toFixed(2)
      } | ${r.commitSeconds.toFixed(2)} | ${(r.blocks / r.seconds).toFixed(0)} | ${
        [r.waits.sourceMs, r.waits.linkMs, r.waits.digestsMs, r.waits.flushMs]
          .map((ms) => (ms / 1000).toFixed(2)).join(" / ")
      } |${limits}`,
    );
  }
}
