import { codecByName, DEFAULT_CODEC_NAME } from "../codec/mod.ts";
import { serveControl } from "../daemon/control_server.ts";
import { type MetricFamily, renderMetrics } from "../daemon/metrics.ts";
import { parseRate, parseSchedule } from "../daemon/rate_schedule.ts";
import { SourceAgent } from "../daemon/source_agent.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { parseHostPort, readKey } from "../key_file.ts";
import { parseNbdAddress } from "../nbd/mod.ts";
import { createLogger } from "../log.ts";
import { DEFAULT_BLOCK_SIZE, validateBlockSize } from "../volume/volume_identity.ts";
import { parseBytes, parseCommand, required } from "./_args.ts";
import { DEFAULT_AGENT_CONTROL } from "./_control_client.ts";
import { withConfigFile } from "./_config.ts";
import { logUnhandledRejections } from "./_guard.ts";
import { Progress } from "./_progress.ts";
import { DAEMON_FLAGS, sessionOptionsFromFlags, transportFromFlags } from "./_transport.ts";
import { waitForSignal } from "./cmd_serve.ts";
import { ExitCode, exitCodeFor } from "./exit_codes.ts";

export const AGENT_USAGE =
  `presync agent --volume NAME=IMAGE --to HOST:PORT --key-file FILE --state DIR [options]

Runs the source agent: tracks each volume, cuts generations and sends them to the
destination in the background; reconnects and resumes by itself.

  --volume NAME=IMAGE    a volume to keep in sync (repeat for several)
  --tracker scan|nbd     how writes are found: scan re-reads and hashes the image (default);
                         nbd serves the image to the VM over NBD and marks every write
  --nbd-listen ADDR      with --tracker nbd: HOST:PORT or unix:PATH (export name = volume)
  --block-size N         block size of new volumes (default 64k)
  --rate R               background rate limit, e.g. 20mbit (0: unlimited; default 0)
  --schedule S           time-of-day rates, e.g. "08:00-20:00=10mbit,*=0"
  --interval SECONDS     time between cuts once in sync (default 30)
  --read-rate R          cap on reads from the images, e.g. 200MB (default unlimited)
  --delay-target MS      yield when queuing delay exceeds this (LEDBAT-like; 0: off; default 25)
  --codec NAME           zstd-native (default), zstd-wasm or none
  --evacuate-hook CMD    shell command run before the final cut (e.g. pause the VM)
  --control HOST:PORT    loopback control endpoint (default ${DEFAULT_AGENT_CONTROL})
  --transport tls|tcp    default tls: trusts --tls-pin SHA256, or --tls-ca FILE, or else
                         pins the server's certificate on first contact (in
                         DIR/known_servers.json; a different one later: exit 4);
                         tcp is plain (authenticated, not encrypted)
  --idle-timeout SECONDS a silent link is declared dead after this (default 15)
  --log-format json|text default text
  --config FILE          JSON object with any of these flags`;

const OPTIONS = {
  volume: { type: "string", multiple: true },
  to: { type: "string" },
  state: { type: "string" },
  tracker: { type: "string" },
  "nbd-listen": { type: "string" },
  "block-size": { type: "string" },
  rate: { type: "string" },
  schedule: { type: "string" },
  interval: { type: "string" },
  "read-rate": { type: "string" },
  "delay-target": { type: "string" },
  codec: { type: "string" },
  "evacuate-hook": { type: "string" },
  ...DAEMON_FLAGS,
} as const;

function parseVolumes(values: string[]): { name: string; image: string }[] {
  if (values.length === 0) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      "at least one --volume NAME=IMAGE is required",
    );
  }
  return values.map((text) => {
    const at = text.indexOf("=");
    if (at <= 0 || at === text.length - 1) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `--volume must be NAME=IMAGE: received ${JSON.stringify(text)}`,
      );
    }
    return { name: text.slice(0, at), image: text.slice(at + 1) };
  });
}

/** `presync agent`: runs until SIGINT/SIGTERM or a fatal error (wrong key…). */
export async function cmdAgent(args: string[]): Promise<number> {
  const parsed = parseCommand("agent", args, OPTIONS);
  const values = await withConfigFile(parsed.values, Object.keys(OPTIONS));
  const log = createLogger(values["log-format"] === "json" ? "json" : "text");
  logUnhandledRejections(log);
  const tracker = (values.tracker as string | undefined) ?? "scan";
  if (tracker !== "scan" && tracker !== "nbd") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--tracker must be scan or nbd: received ${tracker}`,
    );
  }
  const volumes = parseVolumes((values.volume as string[] | undefined) ?? []);
  let nbdListen;
  if (tracker === "nbd") {
    if (volumes.length !== 1 || !values["nbd-listen"]) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        "--tracker nbd serves one volume: give exactly one --volume and --nbd-listen ADDR (HOST:PORT or unix:PATH)",
      );
    }
    nbdListen = parseNbdAddress(values["nbd-listen"] as string);
  }
  const psk = await readKey(required("agent", "--key-file FILE", values["key-file"] as string));
  const interval = Number((values.interval as string | undefined) ?? "30");
  if (!(interval >= 0)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--interval must be seconds: received ${values.interval}`,
    );
  }
  const stateDir = required("agent", "--state DIR", values.state as string);
  const agent = new SourceAgent({
    volumes,
    tracker,
    nbdListen,
    to: parseHostPort("to", required("agent", "--to HOST:PORT", values.to as string)),
    transport: await transportFromFlags(values, "client", { stateDir, log }),
    psk,
    stateDir,
    blockSize: validateBlockSize(
      parseBytes("block-size", values["block-size"] as string, DEFAULT_BLOCK_SIZE),
    ),
    rate: parseRate("rate", (values.rate as string | undefined) ?? "0"),
    schedule: values.schedule ? parseSchedule(values.schedule as string) : [],
    intervalMs: interval * 1000,
    readRateBytesPerSecond: parseBytes("read-rate", values["read-rate"] as string, 0),
    codec: await codecByName((values.codec as string | undefined) ?? DEFAULT_CODEC_NAME),
    delayTargetMs: Number((values["delay-target"] as string | undefined) ?? "25"),
    evacuateHook: values["evacuate-hook"] as string | undefined,
    log,
    session: sessionOptionsFromFlags(values),
  });
  await agent.init();
  const control = await serveControl(
    parseHostPort("control", (values.control as string) ?? DEFAULT_AGENT_CONTROL),
    psk,
    {
      status: () => ({ volumes: agent.status() }),
      metrics: () => agentMetrics(agent),
      pause: (name) => agent.pause(name),
      resume: (name) => agent.resume(name),
      evacuate: (name) => agent.evacuate(name),
      verify: (name) => agent.verify(name),
    },
    log,
  );
  const stopProgress = showProgress(agent);
  const running = agent.run();
  const stopped = await Promise.race([
    waitForSignal().then(() => "signal"),
    running.then(() => "done"),
  ]);
  if (stopped === "signal") {
    agent.stop();
    await running;
  }
  stopProgress();
  await control.close();
  return agent.fatal ? exitCodeFor(agent.fatal) : ExitCode.OK;
}

function agentMetrics(agent: SourceAgent): string {
  const status = agent.status();
  const gauge = (
    name: string,
    help: string,
    pick: (s: (typeof status)[number]) => number | null,
  ): MetricFamily => ({
    name,
    help,
    type: "gauge",
    samples: status.map((s) => ({ labels: { volume: s.name }, value: pick(s) })),
  });
  return renderMetrics([
    gauge(
      "presync_committed_generation",
      "Last generation the destination committed.",
      (s) => s.committedGeneration,
    ),
    gauge("presync_rpo_seconds", "Age of the last committed cut.", (s) => s.rpoSeconds),
    gauge("presync_pending_bytes", "Estimated bytes still to send.", (s) => s.pendingBytes),
    gauge(
      "presync_goodput_bytes_per_second",
      "Measured goodput while sending.",
      (s) => s.goodputBytesPerSecond,
    ),
    gauge(
      "presync_rtt_milliseconds",
      "Smoothed round-trip time to the destination.",
      (s) => s.rttMs,
    ),
    gauge(
      "presync_predicted_evacuation_seconds",
      "Predicted evacuation time.",
      (s) => s.predictedEvacuationSeconds,
    ),
  ]);
}

/** Shows each generation's sending progress (a bar on a terminal, lines in logs). */
function showProgress(agent: SourceAgent): () => void {
  const bars = new Map<string, { generation: number; progress: Progress }>();
  const timer = setInterval(() => {
    for (const v of agent.status()) {
      const sending = (v.state === "sending" || v.state === "evacuating") && v.generationBytes > 0;
      const current = bars.get(v.name);
      if (!sending) {
        current?.progress.done();
        bars.delete(v.name);
        continue;
      }
      const generation = v.committedGeneration + 1;
      if (!current || current.generation !== generation) {
        current?.progress.done();
        bars.set(v.name, {
          generation,
          progress: new Progress(`${v.name} generation ${generation}`),
        });
      }
      bars.get(v.name)!.progress.update(v.generationBytes - v.pendingBytes, v.generationBytes);
    }
  }, 1000);
  return () => {
    clearInterval(timer);
    for (const { progress } of bars.values()) progress.done();
  };
}
