/**
 * The presync demo: a destination, a source agent and an emulated WAN (100 Mbit/s, 150 ms
 * RTT), a generated VM image (zeros, text-like and random regions) written to by a "VM"
 * while it is pre-synchronized in the background under a rate limit, a few link cuts, then
 * an evacuation and a short report.
 *
 *     deno task demo             # 1 GiB image
 *     deno task demo --quick     # 128 MiB image, for a fast look
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Cluster } from "../fixtures/cluster.ts";
import { mixedData } from "../fixtures/data.ts";
import { Prng } from "../fixtures/prng.ts";
import { hashFile } from "../fixtures/workload.ts";
import { pauseHook, writeUntilPaused } from "../fixtures/vm_pause.ts";
import { encodeBlockFrame } from "../agent/codec/mod.ts";
import { isZero } from "../agent/core/mod.ts";
import { createZstdCodec } from "../plugins/codec-zstd/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    "size-mib": { type: "string" },
    "rate-mbit": { type: "string", default: "100" },
    "rtt-ms": { type: "string", default: "150" },
    "background-rate": { type: "string", default: "60mbit" },
    seed: { type: "string", default: "2026" },
  },
});

const MiB = 2 ** 20;
const sizeBytes = Number(values["size-mib"] ?? (values.quick ? 128 : 1024)) * MiB;
const linkBitsPerSecond = Number(values["rate-mbit"]) * 1e6;
const oneWayMs = Number(values["rtt-ms"]) / 2;
const prng = new Prng(Number(values.seed));
const say = (text: string) => console.log(`[demo] ${text}`);

/** Bytes of the whole image compressed with zstd level 1 in 64 KiB blocks (zeros as markers). */
async function compressedSize(path: string): Promise<number> {
  const codec = createZstdCodec({ checksum: false });
  const data = await Deno.readFile(path);
  let total = 0;
  for (let at = 0; at < data.length; at += 65536) {
    total += encodeBlockFrame(data.subarray(at, at + 65536), codec, { isZero }).length;
  }
  return total;
}

const root = await Deno.makeTempDir({ prefix: "presync-demo-" });
let cluster: Cluster | null = null;
try {
  const image = `${root}/vm.img`;
  say(`making a ${sizeBytes / MiB} MiB VM image (zeros, text, random) in ${root}`);
  const file = await Deno.open(image, { write: true, create: true });
  for (let at = 0; at < sizeBytes; at += 64 * MiB) {
    await file.write(mixedData(prng, Math.min(64 * MiB, sizeBytes - at)));
  }
  file.close();

  const link = { delayMs: oneWayMs, rateBitsPerSecond: linkBitsPerSecond, queueBytes: 2 * MiB };
  const hook = pauseHook(root);
  say(
    `starting destination, WAN emulator (${values["rate-mbit"]} Mbit/s, ${
      values["rtt-ms"]
    } ms RTT) and source agent (background rate ${values["background-rate"]})`,
  );
  cluster = await Cluster.start({
    root,
    image,
    wan: { up: link, down: link },
    agentArgs: ["--rate", values["background-rate"]!, "--evacuate-hook", hook, "--interval", "2"],
  });
  const c = cluster;

  // The "VM": a hot set rewritten often and a cold tail written rarely, until paused.
  const blocks = sizeBytes / 4096;
  const hot = Array.from({ length: 256 }, () => prng.int(blocks));
  const pick = () => prng.int(10) < 9 ? hot[prng.int(hot.length)] : prng.int(blocks);
  const vm = writeUntilPaused(root, image, prng, pick, 5);

  let firstCommitSeconds = 0;
  const started = performance.now();
  let cuts = 0;
  let lastLine = 0;
  while (true) {
    const s = await c.volumeStatus();
    const elapsed = (performance.now() - started) / 1000;
    if (Number(s.committedGeneration) >= 1 && firstCommitSeconds === 0) {
      firstCommitSeconds = elapsed;
      say(`first full generation committed after ${elapsed.toFixed(1)} s; background sync goes on`);
    }
    // Cut the link three times during the first sync.
    if (firstCommitSeconds === 0 && cuts < 3 && elapsed > 5 + cuts * 8) {
      say(`cutting the link for 2 s (cut ${++cuts} of 3)`);
      c.emu.cut("reset");
      setTimeout(() => c.emu.restore(), 2000);
    }
    if (performance.now() - lastLine > 5000) {
      lastLine = performance.now();
      say(
        `status: ${s.state}, generation ${s.committedGeneration}, pending ${
          (Number(s.pendingBytes) / MiB).toFixed(1)
        } MiB, ` +
          `RPO ${
            s.rpoSeconds === null ? "-" : Number(s.rpoSeconds).toFixed(1) + " s"
          }, predicted evacuation ` +
          `${
            s.predictedEvacuationSeconds === null ? "unknown" : s.predictedEvacuationSeconds + " s"
          }`,
      );
    }
    // Ten seconds of background sync after the first full generation, then evacuate.
    if (firstCommitSeconds > 0 && elapsed > firstCommitSeconds + 10) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }

  const before = await c.volumeStatus();
  say(`evacuating now (status predicts ${before.predictedEvacuationSeconds} s)`);
  const reply = await c.control("POST", "/volumes/vm/evacuate");
  await vm;
  if (reply.ok !== true) throw new Error(`evacuation failed: ${JSON.stringify(reply)}`);
  const report = reply.result as {
    seconds: number;
    bytesSent: number;
    generation: number;
    verified: boolean;
  };
  const same = await hashFile(image) === await hashFile(`${root}/store/vm/image`);
  const fullCopyBytes = await compressedSize(image);
  const fullCopySeconds = (fullCopyBytes * 8) / linkBitsPerSecond + (2 * oneWayMs * 2) / 1000;

  console.log("\n## presync demo report\n");
  console.log(`| | |\n|---|---|`);
  console.log(
    `| image | ${sizeBytes / MiB} MiB (zeros, text, random), written to during pre-sync |`,
  );
  console.log(
    `| link | ${values["rate-mbit"]} Mbit/s, ${
      values["rtt-ms"]
    } ms RTT, ${cuts} cuts during the first sync |`,
  );
  console.log(
    `| first full sync | ${firstCommitSeconds.toFixed(1)} s under a ${
      values["background-rate"]
    } limit |`,
  );
  console.log(
    `| **evacuation** | **${report.seconds.toFixed(2)} s**, ${
      (report.bytesSent / MiB).toFixed(2)
    } MiB sent, generation ${report.generation} |`,
  );
  console.log(`| predicted by status | ${before.predictedEvacuationSeconds} s |`);
  console.log(
    `| a full copy of the image on this link | ≈ ${fullCopySeconds.toFixed(1)} s (${
      (fullCopyBytes / MiB).toFixed(0)
    } MiB zstd -1 at link rate + 2 RTT) |`,
  );
  console.log(`| verified (Merkle roots) | ${report.verified} |`);
  console.log(`| replica equals the paused source | ${same} |`);
  if (!report.verified || !same) Deno.exitCode = 3;
} finally {
  await cluster?.stop();
  await Deno.remove(root, { recursive: true });
}
