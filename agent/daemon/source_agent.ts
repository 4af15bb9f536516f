import { loadPrefilterSecret } from "../../plugins/tracker-scan/prefilter_key.ts";
import { ScanTracker } from "../../plugins/tracker-scan/scan_tracker.ts";
import type { Codec } from "../codec/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { io } from "../fs/io_error.ts";
import { type Logger, sessionLoggerOf } from "../log.ts";
import { type CutLookup, serveFetchStream } from "../net/block_fetch.ts";
import { RemoteDestination } from "../net/remote_destination.ts";
import { RateLimiter } from "../rate_limiter.ts";
import { SourceState } from "../source/source_state.ts";
import { sendGeneration } from "../sync/send_generation.ts";
import type { Cut, Tracker } from "../tracker.ts";
import { WorkerNbdTracker } from "../../plugins/tracker-nbd/mod.ts";
import type { NbdAddress } from "../nbd/mod.ts";
import { newVolumeIdentity, validateVolumeName } from "../volume/volume_identity.ts";
import { Priority } from "../wire/frame.ts";
import { Signal } from "../wire/_signal.ts";
import { Session } from "../wire/session.ts";
import type { SessionOptions } from "../wire/session_options.ts";
import type { Transport, TransportAddress } from "../wire/transport.ts";
import { DelayController } from "./delay_controller.ts";
import { type Rate, scheduledRate, type ScheduleRule } from "./rate_schedule.ts";
import { type AgentVolume, type VolumeStatus, volumeStatus } from "./volume_status.ts";

/** Configuration of {@linkcode SourceAgent}. */
export interface SourceAgentConfig {
  volumes: { name: string; image: string }[];
  to: TransportAddress;
  transport: Transport;
  psk: Uint8Array;
  /** Directory holding one state directory per volume. */
  stateDir: string;
  /** Block size of new volumes. */
  blockSize: number;
  /** How writes are found: re-scanning the image, or serving it to the VM over NBD. */
  tracker?: "scan" | "nbd";
  /** With the nbd tracker: where the VM's disk is served (export name = volume name). */
  nbdListen?: NbdAddress;
  /** Background rate limit (Infinity: unlimited). */
  rate: Rate;
  /** Time-of-day rates; the first matching rule overrides `rate`. */
  schedule: ScheduleRule[];
  /** Time between two cuts when the volume is in sync. */
  intervalMs: number;
  /** Read-rate cap on the source image (bytes/s, 0: unlimited). */
  readRateBytesPerSecond: number;
  codec: Codec;
  /** Queuing delay above the base RTT at which background sync yields, ms (0: off). */
  delayTargetMs: number;
  /** Shell command run before the final cut of an evacuation (e.g. pause the VM). */
  evacuateHook?: string;
  log: Logger;
  session?: Partial<Omit<SessionOptions, "psk" | "logger">>;
  fs?: FileSystem;
}

/** What `evacuate` reports. */
export interface EvacuateReport {
  volume: string;
  seconds: number;
  bytesSent: number;
  generation: number;
  merkleRoot: string;
  verified: boolean;
}

/** Errors after which retrying cannot help: the agent stops and says why. */
const FATAL = new Set<string>([
  ErrorCode.AUTH_FAILED,
  ErrorCode.PEER_UNTRUSTED,
  ErrorCode.PROTOCOL_VERSION,
  ErrorCode.VOLUME_MISMATCH,
  ErrorCode.INVALID_VOLUME_NAME,
  ErrorCode.GENERATION_MISMATCH,
  ErrorCode.STORE_CORRUPT,
]);

/**
 * The source agent: tracks each volume, cuts generations and sends them to the destination
 * in the background within the rate limit, schedule and delay target; reconnects with
 * exponential backoff and jitter, resuming each generation where it stopped.
 */
export class SourceAgent {
  readonly #config: SourceAgentConfig;
  readonly #fs: FileSystem;
  readonly volumes: AgentVolume[] = [];
  readonly #delay = new DelayController();
  #session: Session | null = null;
  #stopped = false;
  /** Wakes sleeping loops when something changes (resume, evacuate, stop). */
  readonly #wake = new Signal();
  /** The volume loops of the current session. */
  #volumeRuns: Promise<void>[] = [];
  /** Set when the agent stopped for good (auth failure…). */
  fatal: PresyncError | null = null;
  rttMs: number | undefined;

  constructor(config: SourceAgentConfig) {
    this.#config = config;
    this.#fs = config.fs ?? new DenoFileSystem();
  }

  /** Opens (or initialises) each volume's state. */
  async init(): Promise<void> {
    for (const { name, image } of this.#config.volumes) {
      validateVolumeName(name);
      const dir = `${this.#config.stateDir}/${name}`;
      let state: SourceState;
      if (await this.#fs.exists(`${dir}/state.json`)) {
        state = await SourceState.open(this.#fs, dir);
      } else {
        const file = await io(`open source image ${image}`, () => this.#fs.open(image));
        const size = await file.size();
        file.close();
        state = await SourceState.init(
          this.#fs,
          dir,
          newVolumeIdentity(name, size, this.#config.blockSize),
        );
      }
      const tracker = await this.#tracker(state, image, dir);
      this.volumes.push({
        name,
        image,
        state,
        tracker,
        phase: "starting",
        paused: false,
        resumeGate: null,
        evacuation: null,
        committedGeneration: state.committedGeneration,
        committedCutTimeMs: 0,
        committedRoot: "",
        destination: null,
        limiter: new RateLimiter(this.#config.rate, 1 << 20, performance.now()),
        counters: { rawBytes: 0, wireBytes: 0, lastCommitMs: 0 },
        goodputBytesPerSecond: 0,
        lastScanMs: 0,
        lastCommitMs: 0,
        hot: null,
        cut: null,
        dirtyBlocksPerSecond: 0,
        lastDirtyBlocks: 0,
        lastCutMs: Date.now(),
        lastError: null,
      });
    }
  }

  async #tracker(state: SourceState, image: string, dir: string): Promise<Tracker> {
    const scan = new ScanTracker({
      imagePath: image,
      identity: state.identity,
      manifest: state.manifest,
      baselineGeneration: state.committedGeneration,
      checkpointPath: `${dir}/scan.checkpoint`,
      prefilter: {
        tablePath: `${dir}/scan.prefilter`,
        secret: await loadPrefilterSecret(`${this.#config.stateDir}/prefilter.key`),
      },
      // Between cuts, background passes keep the pre-filter table fresh for an evacuation.
      background: this.#config.tracker === "nbd" ? undefined : {
        intervalMs: this.#config.intervalMs,
        onError: (err) =>
          this.#config.log("warn", "background_scan_failed", {
            volume: state.identity.name,
            code: err.code,
            error: err.message,
          }),
      },
      readRateBytesPerSecond: this.#config.readRateBytesPerSecond,
      fs: this.#fs,
    });
    if (this.#config.tracker !== "nbd") return scan;
    // What changed while nobody tracked: after a clean stop the NBD tracker knows (it saved
    // its live set); otherwise one scan against the manifest tells, instead of a full send.
    let initialDirty: Cut | null = null;
    if (!(await this.#fs.exists(`${dir}/nbd-live.dirty`))) initialDirty = await scan.cut();
    try {
      // On a thread of its own: the VM's writes never wait for the sender's CPU work.
      return await WorkerNbdTracker.create({
        imagePath: image,
        identity: state.identity,
        stateDir: dir,
        listen: this.#config.nbdListen ? [this.#config.nbdListen] : [],
        initialDirty: initialDirty?.dirty,
        onError: (err) => this.#config.log("warn", "nbd_connection_failed", { error: String(err) }),
      });
    } finally {
      await initialDirty?.release();
    }
  }

  /** Runs until `stop()` or a fatal error. */
  async run(): Promise<void> {
    const { log } = this.#config;
    let attempt = 0;
    while (!this.#stopped) {
      try {
        const channel = await this.#config.transport.connect(this.#config.to);
        this.#session = await Session.connect(channel, {
          ...this.#config.session,
          psk: this.#config.psk,
          logger: sessionLoggerOf(log),
        });
        log("info", "connected", { to: `${this.#config.to.hostname}:${this.#config.to.port}` });
        attempt = 0;
        const session = this.#session;
        const pinger = this.#measureRtt(session);
        this.#serveFetches(session);
        await Promise.race([
          Promise.all(this.#volumeRuns = this.volumes.map((v) => this.#runVolume(v, session))),
          session.closed.then(() => {
            throw new PresyncError(ErrorCode.CONNECTION_LOST, "session closed", {
              retryable: true,
            });
          }),
        ]);
        await pinger;
      } catch (err) {
        const error = err instanceof PresyncError
          ? err
          : new PresyncError(ErrorCode.CONNECTION_LOST, String(err), {
            retryable: true,
            cause: err,
          });
        if (FATAL.has(error.code)) {
          log("error", "agent_stopped", { code: error.code, error: error.message });
          this.fatal = error;
          for (const v of this.volumes) {
            v.phase = "error";
            v.lastError = error.message;
            v.evacuation?.reject(error);
          }
          this.#stopped = true;
          break;
        }
        for (const v of this.volumes) if (v.phase !== "evacuated") v.phase = "disconnected";
        const delayMs = Math.min(30_000, 250 * 2 ** attempt) * (0.5 + Math.random());
        attempt = Math.min(attempt + 1, 10);
        log("warn", "link_down", {
          code: error.code,
          error: error.message,
          retryInMs: Math.round(delayMs),
        });
        await this.#sleep(delayMs);
      } finally {
        this.#session?.abort();
        this.#session = null;
        // The volume loops of this session must end before the next session starts its own:
        // two loops on one volume would cut and send concurrently.
        this.#wakeAll();
        await Promise.allSettled(this.#volumeRuns);
        this.#volumeRuns = [];
      }
    }
    for (const v of this.volumes) {
      await v.tracker.close();
      v.state.close();
    }
  }

  async #measureRtt(session: Session): Promise<void> {
    while (!this.#stopped && this.#session === session) {
      try {
        this.rttMs = await session.ping();
        if (this.#config.delayTargetMs > 0) this.#delay.update(this.rttMs, performance.now());
        this.#applyRates();
      } catch {
        return;
      }
      await this.#sleep(1000);
    }
  }

  /**
   * Answers the destination's postcopy fetches on `session`: blocks of the generation being
   * sent, read from its cut, each on its own on-demand stream.
   */
  async #serveFetches(session: Session): Promise<void> {
    const lookup: CutLookup = (volume, generation) => {
      const v = this.volumes.find((x) => x.name === volume);
      if (!v?.cut || v.state.pending?.generation !== generation) {
        throw new PresyncError(
          ErrorCode.GENERATION_MISMATCH,
          `generation ${generation} of ${volume} is not being sent now`,
          { retryable: true },
        );
      }
      return { cut: v.cut, identity: v.state.identity };
    };
    while (true) {
      const stream = await session.acceptStream().catch(() => null);
      if (!stream) return;
      serveFetchStream(stream, lookup, this.#config.codec).catch((err) =>
        this.#config.log("warn", "fetch_failed", { error: String(err) })
      );
    }
  }

  /** Sets each volume's limiter from the schedule, the delay controller and evacuations. */
  #applyRates(): void {
    const now = new Date();
    const base = scheduledRate(
      this.#config.schedule,
      now.getHours() * 60 + now.getMinutes(),
      this.#config.rate,
    );
    for (const v of this.volumes) {
      const rate = v.evacuation
        ? Infinity
        : base === Infinity
        ? Infinity
        : base * this.#delay.factor;
      v.limiter.setRate(rate, performance.now());
    }
  }

  async #runVolume(v: AgentVolume, session: Session): Promise<void> {
    const stream = session.openStream(Priority.BULK);
    const { destination, resume } = await RemoteDestination.open(
      stream,
      v.state.identity,
      this.#config.codec,
      v.limiter,
      v.counters,
    );
    // A paused volume waits at the gate until resumed, or until the session ends (stop, link
    // down): then the next write fails and the loop ends instead of holding up a reconnect
    // or the agent's exit.
    const ended = session.closed.then(() => {}, () => {});
    destination.gate = () => v.resumeGate ? Promise.race([v.resumeGate, ended]) : Promise.resolve();
    v.destination = destination;
    v.committedGeneration = resume.committedGeneration;
    v.committedCutTimeMs = resume.cutTimeMs;
    v.committedRoot = resume.merkleRoot;
    v.phase = "idle";
    this.#applyRates();
    try {
      while (!this.#stopped && this.#session === session) {
        if (evacuated(v)) {
          // Nothing more to send; the stream stays open for verify and status.
          await this.#sleep(60_000);
          continue;
        }
        if (v.state.pending) {
          await this.#send(v, destination, await v.tracker.resume(v.state.pending.dirty));
          continue;
        }
        // A paused volume is still cut (so status knows what is pending); sending waits at
        // the gate in the destination.
        const due = v.evacuation !== null || Date.now() - v.lastCutMs >= this.#config.intervalMs;
        if (!due) {
          await this.#sleep(Math.max(50, this.#config.intervalMs - (Date.now() - v.lastCutMs)));
          continue;
        }
        await this.#cutAndSend(v, destination);
      }
    } finally {
      v.destination = null;
      await destination.close().catch(() => {});
    }
  }

  async #cutAndSend(v: AgentVolume, destination: RemoteDestination): Promise<void> {
    const evacuation = v.evacuation;
    if (evacuation && !evacuation.hookDone) {
      await this.#runHook(v);
      evacuation.hookDone = true;
    }
    v.phase = "scanning";
    const cutTimeMs = Date.now();
    const scanStart = performance.now();
    const cut = await v.tracker.cut();
    v.lastScanMs = performance.now() - scanStart;
    // The write rate, from generations after the first (the first is the whole image).
    const elapsed = (cutTimeMs - v.lastCutMs) / 1000;
    if (elapsed > 0 && v.committedGeneration > 0) {
      v.lastDirtyBlocks = cut.dirty.popcount();
      v.dirtyBlocksPerSecond = v.lastDirtyBlocks / elapsed;
    }
    v.lastCutMs = cutTimeMs;
    try {
      await v.state.recordCut(cut.dirty, cutTimeMs);
    } catch (err) {
      await cut.release();
      throw err;
    }
    if (evacuation) evacuation.finalGeneration = v.state.pending!.generation;
    await this.#send(v, destination, cut);
  }

  async #send(v: AgentVolume, destination: RemoteDestination, cut: Cut): Promise<void> {
    v.phase = v.evacuation ? "evacuating" : "sending";
    const started = performance.now();
    const before = destination.counters.wireBytes;
    const cutTimeMs = v.state.pending?.cutTimeMs ?? Date.now();
    let sourceRoot = "";
    v.cut = cut;
    destination.finalGeneration = v.evacuation?.finalGeneration ?? null;
    try {
      const report = await sendGeneration(v.state, cut, destination, { hot: v.hot ?? undefined });
      v.hot?.free();
      v.hot = cut.dirty.clone();
      report.sent.free();
      sourceRoot = report.merkleRoot;
      v.committedRoot = report.merkleRoot;
      v.committedGeneration = report.generation;
      v.committedCutTimeMs = cutTimeMs;
      v.lastCommitMs = destination.counters.lastCommitMs;
      this.#config.log("info", "generation_committed", {
        volume: v.name,
        generation: report.generation,
        bytes: report.bytesSent,
      });
    } finally {
      v.cut = null;
      await cut.release();
      // Time on the wire: the commit is predicted on its own (lastCommitMs).
      const seconds = (performance.now() - started - destination.counters.lastCommitMs) / 1000;
      const wire = destination.counters.wireBytes - before;
      // Goodput measures the link: samples held back by the rate limit say nothing of it.
      const throttled = v.limiter.bytesPerSecond !== Infinity &&
        wire / seconds > 0.8 * v.limiter.bytesPerSecond;
      if (seconds > 0.5 && wire > 0 && !throttled) {
        const sample = wire / seconds;
        // Half weight to the newest sample: the link of the last minute predicts best.
        v.goodputBytesPerSecond = v.goodputBytesPerSecond
          ? 0.5 * v.goodputBytesPerSecond + 0.5 * sample
          : sample;
      }
      if (v.phase === "sending" || v.phase === "evacuating") v.phase = "idle";
    }
    const evacuation = v.evacuation;
    if (evacuation?.finalGeneration === v.committedGeneration) {
      const check = await destination.verify(sourceRoot, true);
      const report = check.report as { ok: boolean; merkleRoot: string; rootMatches?: boolean };
      v.phase = "evacuated";
      evacuation.resolve({
        volume: v.name,
        seconds: (performance.now() - evacuation.startedMs) / 1000,
        bytesSent: v.counters.wireBytes - evacuation.wireBytesAtStart,
        generation: v.committedGeneration,
        merkleRoot: report.merkleRoot,
        verified: report.ok && report.rootMatches === true,
      });
    }
  }

  async #runHook(v: AgentVolume): Promise<void> {
    const hook = this.#config.evacuateHook;
    if (!hook) return;
    this.#config.log("info", "evacuate_hook", { volume: v.name, command: hook });
    const out = await new Deno.Command("sh", {
      args: ["-c", hook],
      env: { PRESYNC_VOLUME: v.name, PRESYNC_IMAGE: v.image },
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!out.success) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `evacuate hook \`${hook}\` failed with exit code ${out.code}; the final cut was not taken`,
      );
    }
  }

  #volume(name: string): AgentVolume {
    const v = this.volumes.find((x) => x.name === name);
    if (!v) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `this agent has no volume named ${JSON.stringify(name)}`,
      );
    }
    return v;
  }

  /** Stops sending `name` at the next block; tracking goes on. Idempotent. */
  pause(name: string): void {
    const v = this.#volume(name);
    if (v.paused) return;
    v.paused = true;
    v.resumeGate = new Promise((resolve) => v.releaseGate = resolve);
  }

  /** Resumes sending `name`. Idempotent. */
  resume(name: string): void {
    const v = this.#volume(name);
    v.paused = false;
    v.releaseGate?.();
    v.resumeGate = null;
    this.#wakeAll();
  }

  /**
   * Evacuates `name`: lifts every limit, runs the hook, cuts the final generation, sends it
   * at full speed, waits for the commit and verifies the Merkle roots.
   */
  evacuate(name: string): Promise<EvacuateReport> {
    const v = this.#volume(name);
    if (v.evacuation) return v.evacuation.promise;
    let resolve!: (r: EvacuateReport) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<EvacuateReport>((a, b) => [resolve, reject] = [a, b]);
    v.evacuation = {
      promise,
      resolve,
      reject,
      startedMs: performance.now(),
      wireBytesAtStart: v.counters.wireBytes,
      hookDone: false,
      finalGeneration: null,
    };
    this.resume(name);
    this.#applyRates();
    this.#wakeAll();
    return promise;
  }

  /**
   * Asks the destination to verify the replica of `name`: its image against its own block
   * hashes, and its Merkle root against the committed generation's root at the source.
   */
  async verify(name: string): Promise<{ ok: boolean; generation: number; report: unknown }> {
    const v = this.#volume(name);
    if (!v.destination) {
      throw new PresyncError(
        ErrorCode.CONNECTION_LOST,
        `volume ${name} is not connected to its destination`,
        {
          retryable: true,
        },
      );
    }
    const reply = await v.destination.verify(v.committedRoot);
    const report = reply.report as { ok: boolean };
    return { ok: report.ok, generation: Number(reply.generation), report };
  }

  /** Per-volume status. */
  status(): VolumeStatus[] {
    return this.volumes.map((v) => volumeStatus(v, this.rttMs));
  }

  /** Stops the agent. */
  stop(): void {
    this.#stopped = true;
    this.#session?.abort();
    this.#wakeAll();
  }

  #wakeAll(): void {
    this.#wake.notify();
  }

  /** Sleeps `ms`, or less when something changes (resume, evacuate, stop). */
  #sleep(ms: number): Promise<void> {
    return this.#wake.wait(ms);
  }
}

/** Whether the volume's evacuation finished (a call: the phase changes while awaiting). */
function evacuated(v: AgentVolume): boolean {
  return v.phase === "evacuated";
}
