import { DEFAULT_CODEC_NAME } from "../codec/mod.ts";
import { parseMetricsListen, serveControl } from "../daemon/control_server.ts";
import { controlSocketPath } from "../daemon/control_socket.ts";
import { type Counters, counters } from "../daemon/counters.ts";
import { type MetricFamily, renderMetrics } from "../daemon/metrics.ts";
import { parseSchedule } from "../daemon/rate_schedule.ts";
import { SourceAgent } from "../daemon/source_agent.ts";
import type { VolumeStatus } from "../daemon/volume_status.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { MigrateRequest } from "../migrate/mod.ts";
import { parseHostPort, readKey } from "../key_file.ts";
import { createLogger, type Logger } from "../log.ts";
import { parseNbdAddress } from "../nbd/mod.ts";
import { CODECS, TRACKERS, TRANSPORTS } from "../registry/mod.ts";
import { isQmpVolumeSpec, parseQmpVolumeSpec } from "../qemu/mod.ts";
import { trackerNameOf } from "../source/open_source_volume.ts";
import { UNLIMITED } from "../units/mod.ts";
import { VERSION } from "../version.ts";
import {
  DEFAULT_BLOCK_SIZE,
  validateBlockSize,
  validateVolumeName,
} from "../volume/volume_identity.ts";
import { reportProgress } from "./_agent_progress.ts";
import { parseCommand } from "./_args.ts";
import { loadSettings, NUMERIC_FLAGS, type Settings } from "./_config.ts";
import { logUnhandledRejections } from "./_guard.ts";
import { ProgressBoard } from "./_progress_board.ts";
import { DAEMON_FLAGS, sessionOptionsFromFlags, transportFromFlags } from "./_transport.ts";
import { waitForSignal } from "./cmd_serve.ts";
import { ExitCode, exitCodeFor } from "./exit_codes.ts";

export const AGENT_USAGE =
  `presync agent --volume NAME=IMAGE --to HOST:PORT --key-file FILE --state DIR [options]

Runs the source agent: tracks each volume, cuts generations and sends them to the
destination in the background; reconnects and resumes by itself.

  --volume NAME=IMAGE    a volume to keep in sync (repeat for several); IMAGE may be the
                         disk of a running QEMU, qmp:unix:QMP_SOCKET#NODE (qemu tracker)
  --tracker ${TRACKERS.choices()}
                         how writes are found: scan re-reads and hashes the image (default);
                         nbd serves the image to the VM over NBD and marks every write;
                         qemu-bitmap reads QEMU's dirty bitmap from a qemu-nbd export (a
                         new volume's first generation copies the whole disk; later ones
                         what the bitmap recorded: rotate bitmaps as the README says);
                         qemu asks a running QEMU over QMP (dirty bitmaps; the default for
                         qmp: volumes)
  --nbd-listen ADDR      with --tracker nbd: HOST:PORT or unix:PATH (export name = volume)
  --nbd-connect ADDR     with --tracker qemu-bitmap: the qemu-nbd export (HOST:PORT or
                         unix:PATH; export name = volume, e.g. qemu-nbd -x NAME --bitmap B)
  --bitmap NAME          with --tracker qemu-bitmap: the dirty bitmap to read (presync-<g>)
  --block-size SIZE      block size of new volumes: 4k to 4m, a power of two (default 64k)
  --rate RATE            background rate limit: 50mbit, 6MB/s, 5MiB/s (default 0: unlimited);
                         while it binds, a 3 s probe every 5 min exceeds it to measure the
                         link for the evacuation prediction
  --schedule S           time-of-day rates, e.g. "08:00-20:00=10mbit,*=0"
  --interval SECONDS     time between cuts once in sync (default 30)
  --read-rate RATE       cap on reads from the images, e.g. 200MB/s (default unlimited)
  --delay-target MS      yield when queuing delay exceeds this (LEDBAT-like; 0: off; default 25)
  --codec NAME           ${CODECS.names.join(", ")} (default ${DEFAULT_CODEC_NAME})
  --evacuate-hook CMD    shell command run before the final cut (e.g. pause the VM); a qmp:
                         volume's VM is paused through QMP after it, and resumed if the
                         evacuation fails
  --evacuate-timeout SECONDS  how long a VM paused through QMP waits for an unreachable
                         destination before the evacuation fails and the VM runs again
                         (default 120)
  --control NAME|PATH    control socket: a name in the runtime directory (/run/presync/agent
                         for root) or a path (default: the volume's name, or "agent" for
                         several volumes)
  --metrics-listen [HOST:]PORT  also serve /metrics over TCP for Prometheus (host default
                         127.0.0.1)
  --transport ${TRANSPORTS.choices()}
                         default tls: trusts --tls-pin SHA256, or --tls-ca FILE, or else
                         pins the server's certificate on first contact (in
                         DIR/known_servers.json; a different one later: exit 4);
                         tcp is plain (authenticated, not encrypted); quic (UDP) needs
                         --tls-ca FILE: a copy of serve's STORE/.tls/cert.pem, or a CA
  --stripes N            each session over N parallel connections of the transport (1 to
                         16, default 1); serve must run with --striped
  --idle-timeout SECONDS a silent link is declared dead after this (default 15)
  --log-format json|text default text; on a terminal with text logs, one progress bar per volume
  --config FILE          JSON object with any of these flags as keys, e.g.
                         {"volume": "db=/var/lib/db.img", "interval": 30, "rate": "50mbit"}

Sizes: a bare k/m/g is binary (64k = 65536), KB/MB are 10^3/10^6, KiB/MiB 2^10/2^20.
Rates: mbit/Mbit/s/Mbps are bits per second (SI), MB/s and MiB/s bytes per second; 20M and
20Mb are refused as ambiguous.`;

const OPTIONS = {
  volume: { type: "string", multiple: true },
  to: { type: "string" },
  state: { type: "string" },
  tracker: { type: "string" },
  "nbd-listen": { type: "string" },
  "nbd-connect": { type: "string" },
  bitmap: { type: "string" },
  stripes: { type: "string" },
  "block-size": { type: "string" },
  rate: { type: "string" },
  schedule: { type: "string" },
  interval: { type: "string" },
  "read-rate": { type: "string" },
  "delay-target": { type: "string" },
  codec: { type: "string" },
  "evacuate-hook": { type: "string" },
  "evacuate-timeout": { type: "string" },
  "metrics-listen": { type: "string" },
  ...DAEMON_FLAGS,
} as const;

function parseVolumes(settings: Settings): { name: string; image: string }[] {
  const values = settings.list("volume");
  if (values.length === 0) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `at least one --volume NAME=IMAGE is required (or "volume" in the --config file)`,
    );
  }
  return values.map((text) => {
    const at = text.indexOf("=");
    if (at <= 0 || at === text.length - 1) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `${settings.name("volume")} must be NAME=IMAGE: received ${JSON.stringify(text)}`,
      );
    }
    return { name: validateVolumeName(text.slice(0, at)), image: text.slice(at + 1) };
  });
}

/** `presync agent`: runs until SIGINT/SIGTERM or a fatal error (wrong key…). */
export async function cmdAgent(args: string[]): Promise<number> {
  const parsed = parseCommand("agent", args, OPTIONS);
  const settings = await loadSettings(parsed.values, OPTIONS, NUMERIC_FLAGS);
  const logFormat = settings.choice("log-format", ["text", "json"] as const, "text");
  // Bars only where a person watches text logs: never inside JSON lines or a log file.
  const board = logFormat === "text" && Deno.stderr.isTerminal() ? new ProgressBoard() : null;
  const log = createLogger(logFormat, board ? (line) => board.print(line) : undefined);
  try {
    return await runAgent(settings, log, board);
  } finally {
    board?.stop();
  }
}

async function runAgent(
  settings: Settings,
  log: Logger,
  board: ProgressBoard | null,
): Promise<number> {
  const values = settings.values;
  logUnhandledRejections(log);
  const volumes = parseVolumes(settings);
  const trackerFlag = settings.text("tracker");
  if (trackerFlag !== undefined) TRACKERS.get(trackerFlag);
  const listenText = settings.text("nbd-listen");
  const connectText = settings.text("nbd-connect");
  const trackerSettings = {
    nbdListen: listenText === undefined ? undefined : parseNbdAddress(listenText),
    nbdConnect: connectText === undefined ? undefined : parseNbdAddress(connectText),
    bitmap: settings.text("bitmap"),
  };
  // Unset: scan for image files, qemu for disks of a running QEMU (qmp:…), per volume.
  const trackerOf = new Map<string, number>();
  for (const v of volumes) {
    const qemu = isQmpVolumeSpec(v.image);
    if (qemu) parseQmpVolumeSpec(v.image);
    const name = trackerNameOf({ tracker: trackerFlag, imagePath: v.image });
    if (name === "qemu" && !qemu) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `--tracker qemu follows disks of a running QEMU: give --volume ` +
          `${v.name}=qmp:unix:QMP_SOCKET#NODE, received ${JSON.stringify(v.image)}`,
      );
    }
    if (name !== "qemu" && qemu) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `volume ${v.name} is a QEMU disk (${v.image}), which only the qemu tracker follows: ` +
          `drop --tracker ${name} (or give --tracker qemu), or give an image file`,
      );
    }
    trackerOf.set(name, (trackerOf.get(name) ?? 0) + 1);
  }
  for (const [name, count] of trackerOf) TRACKERS.get(name).check(trackerSettings, count);
  const socket = controlSocketPath(
    "agent",
    settings.text("control"),
    volumes.length === 1 ? volumes[0].name : "agent",
  );
  const metricsText = settings.text("metrics-listen");
  const metricsListen = metricsText === undefined ? undefined : parseMetricsListen(metricsText);
  // Every setting is read (and checked) before anything starts.
  const readRate = settings.rate("read-rate", UNLIMITED);
  const schedule = settings.text("schedule");
  const options = {
    volumes,
    tracker: trackerFlag,
    trackerSettings,
    to: parseHostPort("to", settings.need("agent", "to", "HOST:PORT")),
    stateDir: settings.need("agent", "state", "DIR"),
    blockSize: validateBlockSize(settings.size("block-size", DEFAULT_BLOCK_SIZE)),
    rate: settings.rate("rate", UNLIMITED),
    schedule: schedule ? parseSchedule(schedule) : [],
    intervalMs: settings.number("interval", 30, "seconds") * 1000,
    readRateBytesPerSecond: readRate === UNLIMITED ? 0 : readRate,
    delayTargetMs: settings.number("delay-target", 25, "milliseconds"),
    evacuateHook: settings.text("evacuate-hook"),
    evacuatePausedTimeoutMs: settings.number("evacuate-timeout", 120, "seconds", 1) * 1000,
    session: sessionOptionsFromFlags(values),
  };
  const codec = CODECS.get(settings.text("codec", DEFAULT_CODEC_NAME));
  const psk = await readKey(settings.need("agent", "key-file", "FILE"));
  const agent = new SourceAgent({
    ...options,
    transport: await transportFromFlags(values, "client", {
      stateDir: options.stateDir,
      log,
      psk,
    }),
    psk,
    codec: await codec.open(),
    log,
  });
  // The control socket answers first: opening a volume can read its whole image (after a stop
  // that saved no dirty set), and `status` says so meanwhile (`opening`).
  const control = await serveControl(
    { socket, metricsListen },
    {
      status: () => ({ version: VERSION, volumes: agent.status() }),
      metrics: () => agentMetrics(agent.status()),
      pause: (name) => agent.pause(name),
      resume: (name) => agent.resume(name),
      evacuate: (name) => agent.evacuate(name),
      migrate: (name, body) => agent.migrate(name, migrateRequestOf(body)),
      verify: (name) => agent.verify(name),
    },
    log,
  );
  try {
    await agent.init();
  } catch (err) {
    await control.close();
    throw err;
  }
  const stopProgress = reportProgress(() => agent.status(), log, board);
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

/** The agent's Prometheus metrics: gauges from each volume's status, then the counters. */
export function agentMetrics(status: VolumeStatus[], processCounters: Counters = counters): string {
  const gauge = (
    name: string,
    help: string,
    pick: (s: VolumeStatus) => number | null,
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
      "presync_rtt_seconds",
      "Smoothed round-trip time to the destination.",
      (s) => s.rttMs === null ? null : s.rttMs / 1000,
    ),
    gauge(
      "presync_predicted_evacuation_seconds",
      "Predicted evacuation time.",
      (s) => s.predictedEvacuationSeconds,
    ),
    gauge("presync_paused", "1 while the volume is paused.", (s) => s.paused ? 1 : 0),
    ...processCounters.families(),
  ]);
}

/** The request `presync migrate` sent (see cmd_migrate.ts), checked. */
function migrateRequestOf(body: Record<string, unknown>): MigrateRequest {
  if (typeof body.qmp !== "string" || body.qmp === "") {
    throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "migrate needs the VM's QMP socket (qmp)");
  }
  const number = (key: string) => {
    const value = body[key];
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !(value > 0)) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `${key} must be a number > 0: received ${value}`,
      );
    }
    return value;
  };
  return {
    qmp: body.qmp,
    timeoutSeconds: number("timeoutSeconds"),
    maxBandwidthBytesPerSecond: number("maxBandwidthBytesPerSecond"),
  };
}
