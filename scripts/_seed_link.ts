/**
 * The seed benchmark's networked contenders (`bench_seed.ts --link`): a first sync of a new
 * replica by `presync agent` into `presync serve` (directory store) through the WAN emulator,
 * with the tree at a given root, and a plain copy of the same image over one TCP stream through
 * an emulator with the same settings (raw bytes, or `zstd -1 |`), as the link's yardstick.
 *
 * @module
 */

import { controlFetch, freePort, SHIPPED_V8_FLAGS } from "../fixtures/cluster.ts";
import { writeNewKey } from "../agent/key_file.ts";
import { linkDirection, type LinkPoint, run } from "./_evac_contenders.ts";
import { WanEmu } from "./wan_emu.ts";

/** What one networked contender measured. */
export interface LinkRun {
  /** From the sender's start to a complete replica on the destination's disk, s. */
  seconds: number;
  /** Bytes through the emulator, both directions. */
  wireBytes: number;
  /** Peak RSS (VmHWM) of the source agent, bytes (0 for a copy). */
  agentRssBytes: number;
  /** Peak RSS of `presync serve`, bytes (0 for a copy). */
  serveRssBytes: number;
  /** CPU time (user + system, all threads) of the source agent, s (0 for a copy). */
  agentCpuSeconds: number;
  /** CPU time of `presync serve`, s (0 for a copy). */
  serveCpuSeconds: number;
  /** CPU time of the source agent's main thread alone, s (0 for a copy). */
  agentMainCpuSeconds: number;
  /** CPU time of serve's main thread alone, s (0 for a copy). */
  serveMainCpuSeconds: number;
}

function emulatedLinkTo(port: number, link: LinkPoint): WanEmu {
  const direction = linkDirection(link);
  return WanEmu.start({ target: { hostname: "127.0.0.1", port }, up: direction, down: direction });
}

function wire(emu: WanEmu): number {
  const c = emu.counters();
  return c.up.bytesOut + c.down.bytesOut;
}

/** VmHWM of a live process, bytes. */
async function peakRss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

/**
 * CPU time (user + system) so far of a live process (all its threads), or with `thread` of
 * that one thread (the main thread's id is the process's), s.
 */
async function cpuSeconds(pid: number, thread?: number): Promise<number> {
  const stat = await Deno.readTextFile(
    thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`,
  );
  // Fields after the command name (which may hold spaces): utime and stime are 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
}

/** `presync …` from the tree at `root`, run as the shipped binary is (its V8 flags). */
function presync(root: string, args: string[], log: string): Deno.ChildProcess {
  return new Deno.Command("sh", {
    args: [
      "-c",
      `exec "$0" run -A --v8-flags=${SHIPPED_V8_FLAGS} "$@" >'${log}' 2>&1`,
      Deno.execPath(),
      `${root}/agent/main.ts`,
      ...args,
    ],
  }).spawn();
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  await child.status;
}

async function tail(path: string): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").slice(-30).join("\n");
}

/**
 * The first sync of `image` (volume `seed`) with the tree at `root`: serve and agent started
 * fresh in `workDir`, timed from the agent's start until its status says generation 1 is
 * committed, then the replica is compared byte for byte with the image (`cmp`).
 */
export async function seedOverLink(
  root: string,
  image: string,
  workDir: string,
  link: LinkPoint,
): Promise<LinkRun> {
  await Deno.remove(workDir, { recursive: true }).catch(() => {});
  await Deno.mkdir(workDir, { recursive: true });
  await Deno.chmod(workDir, 0o700); // it holds the control sockets
  await writeNewKey(`${workDir}/key`);
  const port = freePort();
  const serveControl = `${workDir}/serve.sock`;
  const agentControl = `${workDir}/agent.sock`;
  const serve = presync(root, [
    "serve",
    "--store",
    `${workDir}/store`,
    "--listen",
    `127.0.0.1:${port}`,
    "--key-file",
    `${workDir}/key`,
    "--control",
    serveControl,
    "--log-format",
    "json",
  ], `${workDir}/serve.log`);
  const emu = emulatedLinkTo(port, link);
  let agent: Deno.ChildProcess | undefined;
  try {
    await untilAnswers(serveControl, serve, `${workDir}/serve.log`);
    const started = performance.now();
    agent = presync(root, [
      "agent",
      "--volume",
      `seed=${image}`,
      "--to",
      `127.0.0.1:${emu.addr.port}`,
      "--key-file",
      `${workDir}/key`,
      "--state",
      `${workDir}/state`,
      "--control",
      agentControl,
      "--interval",
      "3600",
      "--log-format",
      "json",
    ], `${workDir}/agent.log`);
    while (true) {
      const status = await controlFetch(agentControl, "GET", "/status")
        .then((r) => r.json())
        .catch(() => null);
      const volume = status?.volumes?.[0];
      if (volume && Number(volume.committedGeneration) >= 1) break;
      const exited = await Promise.race([
        agent.status.then(() => true),
        new Promise<false>((resolve) => setTimeout(() => resolve(false), 100)),
      ]);
      if (exited) throw new Error(`the agent ended:\n${await tail(`${workDir}/agent.log`)}`);
    }
    const seconds = (performance.now() - started) / 1000;
    const result: LinkRun = {
      seconds,
      wireBytes: wire(emu),
      agentRssBytes: await peakRss(agent.pid),
      serveRssBytes: await peakRss(serve.pid),
      agentCpuSeconds: await cpuSeconds(agent.pid),
      serveCpuSeconds: await cpuSeconds(serve.pid),
      agentMainCpuSeconds: await cpuSeconds(agent.pid, agent.pid),
      serveMainCpuSeconds: await cpuSeconds(serve.pid, serve.pid),
    };
    await run("cmp", [image, `${workDir}/store/seed/image`]);
    return result;
  } catch (err) {
    throw new Error(
      `seed over the link failed: ${err}\n--- serve\n${await tail(`${workDir}/serve.log`)}` +
        `\n--- agent\n${await tail(`${workDir}/agent.log`)}`,
      { cause: err },
    );
  } finally {
    if (agent) await stop(agent);
    await stop(serve);
    await emu.close();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
  }
}

async function untilAnswers(
  socket: string,
  child: Deno.ChildProcess,
  log: string,
): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !exited) {
    try {
      await (await controlFetch(socket, "GET", "/metrics")).body?.cancel();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`nothing answers on ${socket}:\n${await tail(log)}`);
}

/**
 * A plain copy of `image` over one TCP stream through the emulator: `cat` (or `zstd -1 -c`)
 * into the connection, the other end into a file (through `zstd -d`) synced with
 * `conv=fdatasync`; timed to the end of that sync, compared byte for byte (`cmp`).
 */
export async function copyOverLink(
  image: string,
  workDir: string,
  link: LinkPoint,
  compress: boolean,
): Promise<LinkRun> {
  await Deno.mkdir(workDir, { recursive: true });
  const replica = `${workDir}/copy.img`;
  const port = freePort();
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const emu = emulatedLinkTo(port, link);
  try {
    const started = performance.now();
    const receiver = (async () => {
      const conn = await listener.accept();
      const sink = new Deno.Command("sh", {
        args: [
          "-c",
          `${
            compress ? "zstd -d -q -c |" : ""
          } dd of='${replica}' bs=1M conv=fdatasync status=none`,
        ],
        stdin: "piped",
      }).spawn();
      await conn.readable.pipeTo(sink.stdin);
      return await sink.status;
    })();
    const source = new Deno.Command(compress ? "zstd" : "cat", {
      args: compress ? ["-1", "-q", "-c", image] : [image],
      stdout: "piped",
    }).spawn();
    const conn = await Deno.connect(emu.addr);
    await source.stdout.pipeTo(conn.writable);
    const [sent, received] = await Promise.all([source.status, receiver]);
    const seconds = (performance.now() - started) / 1000;
    if (!sent.success || !received.success) {
      throw new Error(`the copy failed: exit codes ${sent.code} and ${received.code}`);
    }
    const result = {
      seconds,
      wireBytes: wire(emu),
      agentRssBytes: 0,
      serveRssBytes: 0,
      agentCpuSeconds: 0,
      serveCpuSeconds: 0,
      agentMainCpuSeconds: 0,
      serveMainCpuSeconds: 0,
    };
    await run("cmp", [image, replica]);
    return result;
  } finally {
    listener.close();
    await emu.close();
    await Deno.remove(replica).catch(() => {});
  }
}
