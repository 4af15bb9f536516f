import { markPaused, pauseHook, untilPauseRequested } from "../fixtures/vm_pause.ts";
/**
 * The evacuation benchmark's presync side: an initially synchronised replica (made once on an
 * unlimited link and copied for each run), then a pre-sync phase under a write workload and
 * scheduled link cuts with the status sampled, then `evacuate` with the "VM" paused by the hook.
 *
 * @module
 */

import { Cluster } from "../fixtures/cluster.ts";
import type { Prng } from "../fixtures/prng.ts";
import type { EvacuateReport } from "../agent/daemon/source_agent.ts";
import { linkDirection, type LinkPoint, run } from "./_evac_contenders.ts";
import {
  type DiskWriter,
  fileWriter,
  nbdWriter,
  startWorkload,
  type WorkloadRates,
} from "./_evac_data.ts";
import type { ScheduledCut } from "./wan_emu.ts";

/** How the source agent finds writes. */
export type TrackerName = "scan" | "nbd";

/** One sample of `status` during the pre-sync phase. */
export interface StatusSample {
  /** Seconds since the emulator started (the cuts' clock). */
  t: number;
  pendingBytes: number;
  rpoSeconds: number | null;
  predictedSeconds: number | null;
  state: string;
  linkCut: boolean;
}

/** Options of {@linkcode runPresync}. */
export interface PresyncRunOptions {
  /** A root made by {@linkcode makeTemplate}; copied, never changed. */
  template: string;
  /** Empty directory for this run. */
  root: string;
  link: LinkPoint;
  tracker: TrackerName;
  /** Extra `presync agent` flags (`--interval`, `--rate`…). */
  agentArgs: string[];
  rates: WorkloadRates;
  presyncSeconds: number;
  cuts: ScheduledCut[];
  prng: Prng;
  sampleMs?: number;
}

/** What a presync run measured. */
export interface PresyncRun {
  samples: StatusSample[];
  /** `status` just before `evacuate`. */
  before: Record<string, unknown>;
  report: EvacuateReport;
  /** Wall time around the `evacuate` call, s. */
  wallSeconds: number;
  /** Bytes through the emulator during the evacuation, both directions. */
  wireBytes: number;
  /** The source image (frozen: the "VM" stays paused). */
  image: string;
  /** The replica. */
  replica: string;
  /** Copy of the replica's committed image just before evacuating (rsync's basis). */
  basis: string;
  /** Bytes the workload wrote during the run. */
  bytesWritten: number;
  /** Where the evacuation's time went: the agent's states, polled every 50 ms, in order. */
  phases: { state: string; seconds: number }[];
}

const IMAGE = "source.img";

function trackerArgs(tracker: TrackerName, root: string): string[] {
  return tracker === "nbd" ? ["--tracker", "nbd", "--nbd-listen", `unix:${root}/nbd.sock`] : [];
}

/**
 * Makes `root/source.img` (by `fillImage`) and synchronises it once over an unlimited link,
 * then stops the agents: every run starts from a copy of this root.
 */
export async function makeTemplate(
  root: string,
  tracker: TrackerName,
  fillImage: (path: string) => Promise<void>,
): Promise<void> {
  await fillImage(`${root}/${IMAGE}`);
  const cluster = await Cluster.start({
    root,
    image: `${root}/${IMAGE}`,
    agentArgs: trackerArgs(tracker, root),
  });
  try {
    // Committed and nothing in flight. Not "idle" alone: on a loaded machine a scan of the whole
    // image outlasts the cluster's 1 s interval, so the agent goes from one cut to the next.
    await cluster.waitFor("the initial synchronisation", async () => {
      const s = await cluster.volumeStatus();
      return Number(s.committedGeneration) >= 1 &&
        (s.state === "idle" || (s.state === "scanning" && Number(s.generationBytes) === 0));
    }, 30 * 60_000);
  } finally {
    await cluster.stop();
  }
}

/** Runs the pre-sync phase and the evacuation; leaves the agents stopped. */
export async function runPresync(options: PresyncRunOptions): Promise<PresyncRun> {
  const { root } = options;
  await run("cp", ["-r", "--sparse=always", `${options.template}/.`, root]);
  await Deno.remove(`${root}/nbd.sock`).catch(() => {});
  const image = `${root}/${IMAGE}`;
  const hook = pauseHook(root);
  const direction = linkDirection(options.link);
  const cluster = await Cluster.start({
    root,
    image,
    wan: { up: direction, down: direction, cuts: options.cuts },
    agentArgs: [
      ...trackerArgs(options.tracker, root),
      ...options.agentArgs,
      "--evacuate-hook",
      hook,
    ],
  });
  let writer: DiskWriter | undefined;
  let workload: ReturnType<typeof startWorkload> | undefined;
  const samples: StatusSample[] = [];
  let sampling = true;
  try {
    writer = options.tracker === "nbd"
      ? await retry(() => nbdWriter(`${root}/nbd.sock`, "vm"))
      : await fileWriter(image);
    const size = (await Deno.stat(image)).size;
    workload = startWorkload(writer, options.prng, size, options.rates);
    const sampler = (async () => {
      while (sampling) {
        const s = await cluster.volumeStatus().catch(() => null);
        if (s) {
          samples.push({
            t: cluster.emu.counters().elapsedMs / 1000,
            pendingBytes: Number(s.pendingBytes),
            rpoSeconds: s.rpoSeconds === null ? null : Number(s.rpoSeconds),
            predictedSeconds: s.predictedEvacuationSeconds === null
              ? null
              : Number(s.predictedEvacuationSeconds),
            state: String(s.state),
            linkCut: cluster.emu.isCut,
          });
        }
        await new Promise((resolve) => setTimeout(resolve, options.sampleMs ?? 500));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, options.presyncSeconds * 1000));
    // rsync's basis: the replica's committed image. Sending is paused while it is copied
    // (a commit in flight finishes first), so it is not torn.
    await cluster.control("POST", "/volumes/vm/pause");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const basis = `${root}/basis.img`;
    await run("cp", ["--sparse=always", `${root}/store/vm/image`, basis]);
    const before = await cluster.volumeStatus();
    sampling = false;
    await sampler;
    const vmPaused = (async () => {
      await untilPauseRequested(root);
      await workload!.stop();
      await markPaused(root);
    })();
    const wireBefore = wire(cluster);
    const started = performance.now();
    let evacuating = true;
    const phases: { state: string; seconds: number }[] = [];
    const phasePoller = (async () => {
      let last = started;
      while (evacuating) {
        const s = await cluster.volumeStatus().catch(() => null);
        const now = performance.now();
        const state = s ? String(s.state) : "?";
        const previous = phases.at(-1);
        if (previous?.state === state) previous.seconds += (now - last) / 1000;
        else phases.push({ state, seconds: (now - last) / 1000 });
        last = now;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const reply = await cluster.control("POST", "/volumes/vm/evacuate");
    const wallSeconds = (performance.now() - started) / 1000;
    evacuating = false;
    await phasePoller;
    const wireBytes = wire(cluster) - wireBefore;
    await vmPaused;
    if (reply.ok !== true) {
      throw new Error(`evacuate failed: ${JSON.stringify(reply)}\n${cluster.agent.output}`);
    }
    return {
      samples,
      before,
      report: reply.result as EvacuateReport,
      wallSeconds,
      wireBytes,
      image,
      replica: `${root}/store/vm/image`,
      basis,
      bytesWritten: workload.bytesWritten,
      phases: phases.map((p) => ({ state: p.state, seconds: Math.round(p.seconds * 100) / 100 })),
    };
  } catch (err) {
    const tail = (text: string) => text.split("\n").slice(-40).join("\n");
    throw new Error(
      `presync run failed: ${err}\n--- agent\n${tail(cluster.agent.output)}\n--- serve\n${
        tail(cluster.serve.output)
      }`,
      { cause: err },
    );
  } finally {
    sampling = false;
    await workload?.stop().catch(() => {});
    await writer?.close().catch(() => {});
    await cluster.stop();
  }
}

function wire(cluster: Cluster): number {
  const c = cluster.emu.counters();
  return c.up.bytesOut + c.down.bytesOut;
}

async function retry<T>(fn: () => Promise<T>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
