/**
 * The evacuation benchmark's baselines, each over its own emulated link with the same
 * settings: a full copy (`zstd -1 |` one TCP stream) and `rsync --inplace --no-whole-file`
 * against an rsync daemon on loopback whose module already holds an up-to-date basis.
 *
 * @module
 */

import { freePort } from "../fixtures/cluster.ts";
import { type LinkDirection, WanEmu } from "./wan_emu.ts";

/** One link setting of the benchmark. */
export interface LinkPoint {
  /** Bandwidth each way, bits per second. */
  rateBitsPerSecond: number;
  /** Round-trip time, ms (half of it each way). */
  rttMs: number;
}

/** The emulator's direction settings for a link point: queue of one BDP (at least 256 KiB). */
export function linkDirection(link: LinkPoint): Partial<LinkDirection> {
  const bdp = link.rateBitsPerSecond / 8 * link.rttMs / 1000;
  return {
    delayMs: link.rttMs / 2,
    rateBitsPerSecond: link.rateBitsPerSecond,
    queueBytes: Math.max(256 * 1024, Math.round(bdp)),
  };
}

/** The WAN emulator in front of 127.0.0.1:`port`, both directions shaped as `link`. */
function emulatedLinkTo(port: number, link: LinkPoint): WanEmu {
  const direction = linkDirection(link);
  return WanEmu.start({ target: { hostname: "127.0.0.1", port }, up: direction, down: direction });
}

/** A human name such as "100 Mbit/s, 150 ms". */
export function linkName(link: LinkPoint): string {
  return `${link.rateBitsPerSecond / 1e6} Mbit/s, ${link.rttMs} ms`;
}

/** What one contender did. */
export interface ContenderResult {
  /** Wall time from start to a complete, tool-verified replica, s. */
  seconds: number;
  /** Bytes through the emulator, both directions. */
  wireBytes: number;
  /** Where the replica is. */
  replica: string;
}

/**
 * Full copy: `zstd -1 -c IMAGE` into one TCP connection through the emulator, `zstd -d` into
 * a file at the other end (zstd's frame checksum verifies it).
 */
export async function fullCopy(
  source: string,
  workDir: string,
  link: LinkPoint,
): Promise<ContenderResult> {
  const replica = `${workDir}/full-copy.img`;
  const port = freePort();
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const emu = emulatedLinkTo(port, link);
  try {
    const started = performance.now();
    const receiver = (async () => {
      const conn = await listener.accept();
      const unzstd = new Deno.Command("zstd", {
        args: ["-d", "-q", "-f", "-o", replica],
        stdin: "piped",
      }).spawn();
      await conn.readable.pipeTo(unzstd.stdin);
      return await unzstd.status;
    })();
    const zstd = new Deno.Command("zstd", {
      args: ["-1", "-q", "-c", source],
      stdout: "piped",
    }).spawn();
    const conn = await Deno.connect(emu.addr);
    await zstd.stdout.pipeTo(conn.writable);
    const [sent, received] = await Promise.all([zstd.status, receiver]);
    const seconds = (performance.now() - started) / 1000;
    if (!sent.success || !received.success) {
      throw new Error(`full copy failed: zstd exit codes ${sent.code} and ${received.code}`);
    }
    const c = emu.counters();
    return { seconds, wireBytes: c.up.bytesOut + c.down.bytesOut, replica };
  } finally {
    listener.close();
    await emu.close();
  }
}

/**
 * `rsync --inplace --no-whole-file -z -I` of `source` to an rsync daemon on loopback (through
 * the emulator) whose module already holds `basis`, as an up-to-date basis from the pre-sync
 * phase. rsync's whole-file checksum verifies the result (it retries on a mismatch).
 */
export async function rsyncCopy(
  source: string,
  basis: string,
  workDir: string,
  link: LinkPoint,
): Promise<ContenderResult> {
  const dir = `${workDir}/rsync`;
  await Deno.mkdir(`${dir}/module`, { recursive: true });
  const replica = `${dir}/module/image`;
  await run("cp", ["--sparse=always", basis, replica]);
  const root = Deno.uid() === 0 ? "uid = 0\ngid = 0\n" : "";
  await Deno.writeTextFile(
    `${dir}/rsyncd.conf`,
    `pid file = ${dir}/rsyncd.pid\nlog file = ${dir}/rsyncd.log\nuse chroot = false\n${root}` +
      `[evac]\npath = ${dir}/module\nread only = false\n`,
  );
  const port = freePort();
  const daemon = new Deno.Command("rsync", {
    args: [
      "--daemon",
      "--no-detach",
      `--config=${dir}/rsyncd.conf`,
      "--address=127.0.0.1",
      `--port=${port}`,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const emu = emulatedLinkTo(port, link);
  try {
    await waitPort(port);
    const started = performance.now();
    await run("rsync", [
      "--inplace",
      "--no-whole-file",
      "--compress",
      "--ignore-times",
      source,
      `rsync://127.0.0.1:${emu.addr.port}/evac/image`,
    ]);
    const seconds = (performance.now() - started) / 1000;
    const c = emu.counters();
    return { seconds, wireBytes: c.up.bytesOut + c.down.bytesOut, replica };
  } finally {
    await emu.close();
    try {
      daemon.kill("SIGTERM");
    } catch { /* already gone */ }
    await daemon.status;
  }
}

/** Runs a command to completion; throws with its stderr when it fails. */
export async function run(command: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `${command} ${args.join(" ")} exited with ${out.code}: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
}

async function waitPort(port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`the rsync daemon did not listen on 127.0.0.1:${port} within 10 s`);
}
