import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import {
  detachCut,
  type MigrateReport,
  type MigrateRequest,
  migrateVolume,
  MIGRATION_COPY_FILE,
} from "../migrate/mod.ts";
import type { Codec } from "../codec/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import type { FileSystem } from "../fs/file_system.ts";
import { type Logger, sessionLoggerOf } from "../log.ts";
import { type CutLookup, serveFetchStream } from "../net/block_fetch.ts";
import { openSourceVolume } from "../source/open_source_volume.ts";
import type { TrackerSettings } from "../registry/mod.ts";
import { loadPrefilterSecret } from "../../plugins/tracker-scan/prefilter_key.ts";
import { io } from "../fs/io_error.ts";
import { validateVolumeName } from "../volume/volume_identity.ts";
import { Signal } from "../wire/_signal.ts";
import { Session } from "../wire/session.ts";
import type { SessionOptions } from "../wire/session_options.ts";
import type { Transport, TransportAddress } from "../wire/transport.ts";
import { Backoff } from "./backoff.ts";
import { runConnectionLoop } from "./connection_loop.ts";
import type { EvacuateReport } from "./evacuation.ts";
import { newSourceInstance, openRemoteLink } from "./remote_link.ts";
import { RatePolicy } from "./rate_policy.ts";
import type { Rate, ScheduleRule } from "./rate_schedule.ts";
import { superviseVolume } from "./volume_supervisor.ts";
import { VolumePipeline } from "./volume_pipeline.ts";
import {
  openingStatus,
  unstartedStatus,
  type VolumeStatus,
  volumeStatus,
} from "./volume_status.ts";
import { faultFix } from "./volume_faults.ts";
import { counters } from "./counters.ts";

export type { EvacuateReport } from "./evacuation.ts";

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
  /** How writes are found: a tracker of the registry (`agent/registry/`; default `scan`). */
  tracker?: string;
  /** What the tracker needs (`--nbd-listen`, `--nbd-connect`, `--bitmap`). */
  trackerSettings?: TrackerSettings;
  /** Background rate limit (Infinity: unlimited). */
  rate: Rate;
  /** Time-of-day rates; the first matching rule overrides `rate`. */
  schedule: ScheduleRule[];
  /** Time between two cuts when the volume is in sync (the first comes right after start). */
  intervalMs: number;
  /** Read-rate cap on the source image (bytes/s, 0: unlimited). */
  readRateBytesPerSecond: number;
  codec: Codec;
  /** Queuing delay above the base RTT at which background sync yields, ms (0: off). */
  delayTargetMs: number;
  /** Shell command run before the final cut of an evacuation (e.g. pause the VM). */
  evacuateHook?: string;
  /**
   * How long a VM an evacuation paused (through QMP, qemu tracker) waits for an unreachable
   * destination before the evacuation fails and the VM runs again, ms (default 120 s).
   */
  evacuatePausedTimeoutMs?: number;
  log: Logger;
  session?: Partial<Omit<SessionOptions, "psk" | "logger">>;
  fs?: FileSystem;
}

/** Errors of the configuration itself: the agent does not start. */
const CONFIGURATION_ERRORS = new Set<ErrorCode>([
  ErrorCode.INVALID_ARGUMENT,
  ErrorCode.INVALID_VOLUME_NAME,
]);

/**
 * How long one connection attempt may take, ms: QUIC hears nothing back from a closed UDP
 * port, so without a deadline an attempt to a destination that is down would never end.
 */
const CONNECT_TIMEOUT_MS = 10_000;

/** How often the RTT is measured (and the rates follow it), ms. */
const RTT_INTERVAL_MS = 1000;

/**
 * The source agent: tracks each volume, cuts generations and sends them to the destination
 * in the background within the rate limit, schedule and delay target; reconnects with
 * exponential backoff and jitter, resuming each generation where it stopped. A volume's
 * fault parks that volume only; the agent stops only for a process-wide fault (wrong key,
 * untrusted server), which {@linkcode SourceAgent.fatal} then holds.
 *
 * The pieces: the connection loop (`connection_loop.ts`), one pipeline per volume
 * (`volume_pipeline.ts`) run on each session by its supervisor (`volume_supervisor.ts`),
 * the rate policy (`rate_policy.ts`), the evacuation (`evacuation.ts`).
 */
export class SourceAgent {
  readonly #config: SourceAgentConfig;
  readonly #fs: FileSystem;
  readonly #volumes: VolumePipeline[] = [];
  /** Volumes that could not start, with why. */
  readonly #unstarted = new Map<string, { image: string; error: PresyncError }>();
  readonly #rates: RatePolicy;
  /**
   * Settled when `init` has opened every volume it could. Control requests that arrive before
   * (the control socket answers while a volume's image is read) wait for it.
   */
  readonly #opened = Promise.withResolvers<void>();
  #isOpened = false;
  /** Which agent process this is, as the destination sees it (split-brain protection). */
  readonly #instance = newSourceInstance();
  /** The scan pre-filter's secret key (read or made by `init`). */
  #prefilterSecret: Uint8Array | undefined;
  #session: Session | null = null;
  /** Supervisors of the current session, so a resumed parked volume can join it. */
  #supervise: ((v: VolumePipeline) => void) | null = null;
  #stopped = false;
  /** Wakes sleeping loops when something changes (resume, evacuate, stop). */
  readonly #wake = new Signal();
  /** Set when the agent stopped for good (auth failure…). */
  fatal: PresyncError | null = null;
  rttMs: number | undefined;

  constructor(config: SourceAgentConfig) {
    this.#config = config;
    this.#fs = config.fs ?? new DenoFileSystem();
    this.#rates = new RatePolicy(config);
    // A rejection is seen by the requests that wait for it, and by init's caller.
    this.#opened.promise.catch(() => {});
  }

  /**
   * Opens (or initialises) each volume's state and tracker. A volume that cannot start (its
   * image is missing, its state damaged…) is parked with the cause, and the others start;
   * `resume` tries it again, and `run` does by itself, with backoff, when the cause may clear
   * (a QEMU volume's VM not running yet).
   *
   * @throws {PresyncError} `INVALID_VOLUME_NAME` or `INVALID_ARGUMENT`: the configuration
   *   itself is wrong, nothing starts
   */
  async init(): Promise<void> {
    try {
      await this.#open();
      this.#isOpened = true;
      this.#opened.resolve();
    } catch (err) {
      this.#opened.reject(err);
      throw err;
    }
  }

  /** Runs `fn` once `init` opened the volumes; once it has, at once (in the same turn). */
  #afterOpen<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.#isOpened) return this.#opened.promise.then(fn);
    try {
      return fn();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async #open(): Promise<void> {
    for (const { name } of this.#config.volumes) validateVolumeName(name);
    // The agent's secret for the scan's keyed pre-filter: one per agent, made on first start.
    await io(
      `create ${this.#config.stateDir}`,
      () => Deno.mkdir(this.#config.stateDir, { recursive: true, mode: 0o700 }),
    );
    this.#prefilterSecret = await loadPrefilterSecret(`${this.#config.stateDir}/prefilter.key`);
    for (const { name, image } of this.#config.volumes) {
      try {
        this.#volumes.push(await this.#start(name, image));
      } catch (err) {
        if (err instanceof PresyncError && CONFIGURATION_ERRORS.has(err.code)) throw err;
        this.#parkUnstarted(name, image, err);
      }
    }
    this.#config.log("info", "agent_started", {
      instance: this.#instance.instance,
      volumes: this.#volumes.map((v) => v.name),
    });
  }

  async #start(name: string, image: string): Promise<VolumePipeline> {
    const { state, tracker, vm } = await openSourceVolume({
      fs: this.#fs,
      name,
      imagePath: image,
      stateDir: `${this.#config.stateDir}/${name}`,
      blockSize: this.#config.blockSize,
      readRateBytesPerSecond: this.#config.readRateBytesPerSecond,
      tracker: this.#config.tracker,
      trackerSettings: this.#config.trackerSettings,
      onTrackerError: (err) =>
        this.#config.log("warn", "nbd_connection_failed", { volume: name, error: String(err) }),
      prefilterSecret: this.#prefilterSecret,
      log: this.#config.log,
      // Between cuts, background passes keep the pre-filter table fresh for an evacuation.
      backgroundScan: {
        intervalMs: this.#config.intervalMs,
        onError: (err) =>
          this.#config.log("warn", "background_scan_failed", {
            volume: name,
            code: err.code,
            error: err.message,
          }),
      },
    });
    return new VolumePipeline({
      name,
      image,
      state,
      tracker,
      intervalMs: this.#config.intervalMs,
      evacuateHook: this.#config.evacuateHook,
      vm,
      evacuatePausedTimeoutMs: this.#config.evacuatePausedTimeoutMs,
      rttMs: () => this.rttMs,
      log: this.#config.log,
    });
  }

  #parkUnstarted(name: string, image: string, err: unknown): void {
    const error = err instanceof PresyncError
      ? err
      : new PresyncError(ErrorCode.IO, String(err), { cause: err });
    this.#unstarted.set(name, { image, error });
    this.#config.log("error", "volume_parked", {
      volume: name,
      code: error.code,
      error: `the volume could not start: ${error.message}`,
      fix: faultFix(error, name),
    });
  }

  /** Runs until `stop()` or a process-wide fault. */
  async run(): Promise<void> {
    const { log } = this.#config;
    let ended = false;
    const retrying = this.#retryUnstarted(() => ended);
    this.fatal = await runConnectionLoop({
      connect: async () => {
        const channel = await this.#config.transport.connect(
          this.#config.to,
          AbortSignal.timeout(CONNECT_TIMEOUT_MS),
        );
        return await Session.connect(channel, {
          ...this.#config.session,
          psk: this.#config.psk,
          logger: sessionLoggerOf(log),
        });
      },
      serve: (session) => this.#serveSession(session),
      stopped: () => this.#stopped,
      sleep: (ms) => this.#sleep(ms),
      onDown: (error) => {
        counters.error(error);
        counters.linkCut();
        for (const v of this.#volumes) v.linkDown(error);
      },
      log,
    });
    ended = true;
    this.#wakeAll();
    // A volume it is starting now must be among those closed below.
    await retrying;
    const end = this.fatal ??
      new PresyncError(ErrorCode.SESSION_CLOSED, "the agent stopped before it finished");
    for (const v of this.#volumes) {
      v.stopWith(end);
      await v.close();
    }
  }

  /**
   * Starts again, with backoff, the volumes that could not start for a cause that may clear
   * by itself (a QEMU volume whose VM is not running yet: `CONNECTION_LOST`), until `ended()`;
   * `presync resume` still starts one at once. Each failed try is logged as the first was.
   */
  async #retryUnstarted(ended: () => boolean): Promise<void> {
    const backoff = new Backoff();
    while (!ended()) {
      const waiting = [...this.#unstarted].filter(([, u]) => u.error.retryable);
      if (waiting.length === 0) return;
      await this.#sleep(backoff.next(Math.random()));
      for (const [name] of waiting) {
        if (ended()) return;
        // A failure parks the volume again with the new cause (and logs it).
        if (this.#unstarted.has(name)) await this.resume(name).catch(() => {});
      }
    }
  }

  /** Serves one session: RTT and rates, postcopy fetches, and every volume, until it ends. */
  async #serveSession(session: Session): Promise<void> {
    counters.connected();
    this.#config.log("info", "connected", {
      to: `${this.#config.to.hostname}:${this.#config.to.port}`,
    });
    this.#session = session;
    // A stop() that came while this session was connecting found no session to abort.
    if (this.#stopped) session.abort();
    let open = true;
    const ended = session.closed.finally(() => open = false);
    ended.catch(() => {});
    const alive = () => open && !this.#stopped && this.#session === session;
    const runs: Promise<void>[] = [];
    this.#supervise = (v) => {
      runs.push(superviseVolume(v, {
        openLink: () =>
          openRemoteLink(session, v, { codec: this.#config.codec, source: this.#instance, ended }),
        alive,
        sleep: (ms) => this.#sleep(ms),
        log: this.#config.log,
      }));
    };
    this.#applyRates();
    const pinger = this.#measureRtt(session, alive);
    this.#serveFetches(session);
    for (const v of this.#volumes) if (!v.parked) this.#supervise(v);
    try {
      await session.closed;
      throw new PresyncError(ErrorCode.CONNECTION_LOST, "the destination closed the session", {
        retryable: true,
      });
    } finally {
      session.abort();
      this.#session = null;
      this.#supervise = null;
      // The volume runs of this session must end before the next session starts its own:
      // two runs of one volume would cut and send concurrently.
      this.#wakeAll();
      await Promise.allSettled(runs);
      await pinger;
    }
  }

  async #measureRtt(session: Session, alive: () => boolean): Promise<void> {
    while (alive()) {
      try {
        this.rttMs = await session.ping();
      } catch {
        return;
      }
      this.#rates.onRtt(this.rttMs, performance.now());
      this.#applyRates();
      await this.#sleep(RTT_INTERVAL_MS);
    }
  }

  /**
   * Answers the destination's postcopy fetches on `session`: blocks of the generation being
   * sent, read from its cut, each on its own on-demand stream.
   */
  async #serveFetches(session: Session): Promise<void> {
    const lookup: CutLookup = (volume, generation) => this.#volume(volume).cutFor(generation);
    while (true) {
      const stream = await session.acceptStream().catch(() => null);
      if (!stream) return;
      serveFetchStream(stream, lookup, this.#config.codec).catch((err) =>
        this.#config.log("warn", "fetch_failed", { error: String(err) })
      );
    }
  }

  /** Sets each volume's limiter from the rate policy (an evacuation lifts every limit). */
  #applyRates(): void {
    const now = new Date();
    for (const v of this.#volumes) {
      v.limiter.setRate(this.#rates.rateAt(now, v.evacuating), performance.now());
    }
  }

  #volume(name: string): VolumePipeline {
    const v = this.#volumes.find((x) => x.name === name);
    if (v) return v;
    const unstarted = this.#unstarted.get(name);
    if (unstarted) {
      throw new PresyncError(
        unstarted.error.code,
        `volume ${name} is parked: it could not start: ${unstarted.error.message}`,
      );
    }
    throw new PresyncError(
      ErrorCode.VOLUME_NOT_FOUND,
      `this agent has no volume named ${JSON.stringify(name)}`,
    );
  }

  /** Stops sending `name` at the next block; tracking goes on. Idempotent. */
  pause(name: string): Promise<void> {
    return this.#afterOpen(() => Promise.resolve(this.#volume(name).pause()));
  }

  /**
   * Resumes sending `name`; a parked volume is retried (after its cause was fixed), one that
   * could not start is started. Idempotent.
   *
   * @throws {PresyncError} `VOLUME_EVACUATED` once the volume was evacuated; why a volume
   *   still cannot start
   */
  resume(name: string): Promise<void> {
    return this.#afterOpen(() => this.#resume(name));
  }

  async #resume(name: string): Promise<void> {
    const unstarted = this.#unstarted.get(name);
    if (unstarted && !this.fatal && !this.#stopped) {
      let started: VolumePipeline;
      try {
        started = await this.#start(name, unstarted.image);
      } catch (err) {
        this.#parkUnstarted(name, unstarted.image, err);
        throw this.#unstarted.get(name)!.error;
      }
      this.#unstarted.delete(name);
      this.#volumes.push(started);
      this.#config.log("info", "volume_resumed", { volume: name });
      this.#applyRates();
      this.#supervise?.(started);
      return;
    }
    const v = this.#volume(name);
    v.resume();
    if (v.parked && !this.fatal && !this.#stopped) {
      v.unpark();
      this.#config.log("info", "volume_resumed", { volume: name });
      this.#supervise?.(v);
    }
    this.#wakeAll();
  }

  /**
   * Evacuates `name`: lifts every limit, runs the hook, cuts the final generation, sends it
   * at full speed, waits for the commit and verifies the Merkle roots. Each step is logged
   * and shown in `status`.
   */
  evacuate(name: string): Promise<EvacuateReport> {
    return this.#afterOpen(() => this.#evacuate(name));
  }

  async #evacuate(name: string): Promise<EvacuateReport> {
    const promise = this.#volume(name).evacuate();
    this.#applyRates();
    this.#wakeAll();
    return await promise;
  }

  /**
   * Migrates the VM of volume `name` to the destination (`presync migrate`): its memory over
   * a memory stream of the current session, the final generation cut at the switchover.
   *
   * @throws {PresyncError} `MIGRATION_ABORTED` (retryable) when not connected; what
   *   {@linkcode migrateVolume} throws
   */
  migrate(name: string, request: MigrateRequest): Promise<MigrateReport> {
    return this.#afterOpen(() => this.#migrate(name, request));
  }

  async #migrate(name: string, request: MigrateRequest): Promise<MigrateReport> {
    const volume = this.#volume(name);
    const session = this.#session;
    if (!session) {
      throw new PresyncError(
        ErrorCode.MIGRATION_ABORTED,
        `not connected to the destination: ${name} was not migrated, its VM runs on here`,
        { retryable: true },
      );
    }
    // Held from here: the final cut at the switchover need not wait for one in flight.
    volume.holdCuts = true;
    try {
      return await this.#migrateVolume(volume, session, request);
    } finally {
      volume.holdCuts = false;
      this.#wakeAll();
    }
  }

  #migrateVolume(
    volume: VolumePipeline,
    session: Session,
    request: MigrateRequest,
  ): Promise<MigrateReport> {
    const name = volume.name;
    return migrateVolume({
      volume: name,
      session,
      codec: this.#config.codec,
      codecs: [this.#config.codec, createNoneCodec()],
      request,
      log: this.#config.log,
      evacuate: (sendAfter) => {
        let finalCut: Promise<unknown> = Promise.resolve();
        const done = volume.evacuate({
          skipHook: true,
          onStart: (evacuation) => {
            finalCut = evacuation.finalCut;
            evacuation.sendAfter = sendAfter;
            // A point-in-time cut reads through the tracker's view in QEMU (the qmp tracker's
            // fleece), which QEMU cannot complete with: copy its blocks first.
            evacuation.detachFinalCut = async (cut) => {
              if (!cut.pointInTime) return cut;
              const started = performance.now();
              const blocks = cut.dirty.popcount();
              const detached = await detachCut(
                cut,
                `${volume.state.dir}/${MIGRATION_COPY_FILE}`,
                volume.tracker.blockSize,
                volume.tracker.sizeBytes,
              );
              this.#config.log("info", "final_cut_detached", {
                volume: name,
                blocks,
                ms: Math.round(performance.now() - started),
              });
              return detached;
            };
          },
        });
        this.#applyRates();
        this.#wakeAll();
        return { finalCut, done };
      },
    });
  }

  /**
   * Asks the destination to verify the replica of `name`: its image against its own block
   * hashes, and its Merkle root against the committed generation's root at the source.
   */
  verify(name: string): Promise<{ ok: boolean; generation: number; report: unknown }> {
    return this.#afterOpen(() => this.#volume(name).verify());
  }

  /** Per-volume status, in the configuration's order. */
  status(): VolumeStatus[] {
    return this.#config.volumes.map(({ name }) => {
      const v = this.#volumes.find((x) => x.name === name);
      if (v) return volumeStatus(v.snapshot(), this.rttMs);
      const unstarted = this.#unstarted.get(name);
      return unstarted ? unstartedStatus(name, unstarted.error) : openingStatus(name);
    });
  }

  /** Stops the agent. */
  stop(): void {
    this.#stopped = true;
    this.#session?.abort();
    for (const v of this.#volumes) v.tracker.interrupt?.();
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
