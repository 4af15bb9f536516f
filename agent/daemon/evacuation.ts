import type { PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { SendWaits } from "../sync/send_generation.ts";
import type { Cut } from "../tracker.ts";

/** Where an evacuation's time went, and what it moved (`evacuate --json`). */
export interface EvacuationBreakdown {
  /** The evacuate hook (pausing the VM), s; it runs at once, also while a generation is in flight. */
  pauseSeconds: number;
  /** The final cut (the scan tracker reads the image), s. */
  scanSeconds: number;
  /** Sending since the evacuation was asked for (the generation in flight, the final one), s. */
  sendSeconds: number;
  /** Commits at the destination, s. */
  commitSeconds: number;
  /** The Merkle root check, s. */
  verifySeconds: number;
  /**
   * Generations committed during the evacuation: 1, also when one was in flight (the final
   * cut is folded into it); 2 when one was in flight and the destination does not fold.
   */
  generations: number;
  /** Blocks sent during the evacuation. */
  blocks: number;
  /** Bytes put on the session during the evacuation. */
  wireBytes: number;
  /**
   * Of `sendSeconds`, the time the sends started after the evacuation was asked for waited:
   * for the source (reading, hashing, syncing the manifest), for the link (compressing and
   * encoding the blocks, the session's window full), for the destination's page digests, and
   * for acknowledgements. A send bound by the link (or by compression) waits for the link;
   * one bound by the disk or hashing, for the source.
   */
  sendWaits: {
    sourceSeconds: number;
    linkSeconds: number;
    digestsSeconds: number;
    flushSeconds: number;
  };
}

/** The timed parts of an evacuation. */
export type EvacuationPart = "pause" | "scan" | "send" | "commit" | "verify";

/** What `evacuate` reports once the final generation committed. */
export interface EvacuateReport {
  volume: string;
  seconds: number;
  bytesSent: number;
  generation: number;
  merkleRoot: string;
  verified: boolean;
  breakdown: EvacuationBreakdown;
}

/**
 * The steps of an evacuation, in order (`waiting_for_link` and `sending` may repeat after a
 * link cut): asked for, waiting until the volume reaches its destination, the evacuate hook
 * (pausing the VM) running and done, the final cut, sending it at full speed, the commit at
 * the destination, the Merkle root check, and the outcome.
 */
export type EvacuationStep =
  | "requested"
  | "waiting_for_link"
  | "hook"
  | "hook_done"
  | "final_cut"
  | "sending"
  | "commit"
  | "verify"
  | "done"
  | "failed";

/** An evacuation's progress, for `status`. */
export interface EvacuationStatus {
  step: EvacuationStep;
  /** Seconds in this step so far. */
  stepSeconds: number;
  /** Seconds since the evacuation was asked for. */
  seconds: number;
  /** The final generation, once cut. */
  finalGeneration: number | null;
  /** What the step waits for, or why it failed (e.g. the destination is unreachable). */
  detail: string | null;
}

/**
 * One volume's evacuation: which step it is in (logged as `evacuation_step` at every change,
 * shown in `status`), and the report its caller waits for. The per-volume pipeline drives
 * the steps; this object only records them and settles the promise once.
 */
export class Evacuation {
  /** Resolves with the report once the final generation is committed and checked. */
  readonly promise: Promise<EvacuateReport>;
  /** Wire bytes the volume had sent when the evacuation was asked for. */
  readonly wireBytesAtStart: number;
  readonly #volume: string;
  readonly #log: Logger;
  readonly #startedMs: number;
  #step: EvacuationStep = "requested";
  #stepSinceMs: number;
  #detail: string | null = null;
  #finalGeneration: number | null = null;
  #hookDone = false;
  readonly #parts: Record<EvacuationPart, number> = {
    pause: 0,
    scan: 0,
    send: 0,
    commit: 0,
    verify: 0,
  };
  #generations = 0;
  #blocks = 0;
  readonly #waits: SendWaits = { sourceMs: 0, linkMs: 0, digestsMs: 0, flushMs: 0 };
  #resolve!: (report: EvacuateReport) => void;
  #reject!: (err: unknown) => void;
  /** Resolves with the final generation once it is cut (its `begin` goes out next). */
  readonly finalCut: Promise<number>;
  #resolveCut!: (generation: number) => void;
  /** Skip the evacuate hook: the VM is paused already (by its migration). */
  readonly skipHook: boolean;
  /**
   * Set by a migration: turns the final cut, once recorded, into one that no longer reads
   * through the tracker (its dirty blocks copied locally, see `migrate/detached_cut.ts`),
   * before `finalCut` resolves and QEMU completes.
   */
  detachFinalCut: ((cut: Cut) => Promise<Cut>) | null = null;
  /**
   * Set by a migration: no block of the volume is sent before this settles (the memory
   * stream's last bytes handed to the transport). The VM is paused until its memory arrived,
   * and blocks sent meanwhile would sit in the same link's buffers ahead of them; the
   * destination serves what it lacks on demand once the VM runs. `begin` still goes out.
   */
  sendAfter: Promise<void> | null = null;

  constructor(volume: string, wireBytesAtStart: number, log: Logger, skipHook = false) {
    this.skipHook = skipHook;
    this.finalCut = new Promise((resolve) => this.#resolveCut = resolve);
    this.#volume = volume;
    this.#log = log;
    this.wireBytesAtStart = wireBytesAtStart;
    this.#startedMs = performance.now();
    this.#stepSinceMs = this.#startedMs;
    this.promise = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Callers that gave up (a timed-out `evacuate`) must not leave an unhandled rejection.
    this.promise.catch(() => {});
    log("info", "evacuation_step", { volume, step: "requested" });
  }

  /** The current step. */
  get step(): EvacuationStep {
    return this.#step;
  }

  /** Whether the evacuation ended (done or failed). */
  get settled(): boolean {
    return this.#step === "done" || this.#step === "failed";
  }

  /** Whether the evacuate hook ran (it runs once per evacuation, before the final cut). */
  get hookDone(): boolean {
    return this.#hookDone;
  }

  /** The final generation, once cut. */
  get finalGeneration(): number | null {
    return this.#finalGeneration;
  }

  /** Seconds since the evacuation was asked for. */
  get seconds(): number {
    return (performance.now() - this.#startedMs) / 1000;
  }

  /** When the evacuation was asked for (`performance.now()` clock), ms. */
  get startedAtMs(): number {
    return this.#startedMs;
  }

  /** Adds `seconds` spent in `part`. */
  timed(part: EvacuationPart, seconds: number): void {
    this.#parts[part] += Math.max(0, seconds);
  }

  /** Adds where a send started after the evacuation was asked for waited, ms. */
  sendWaited(waits: SendWaits): void {
    this.#waits.sourceMs += waits.sourceMs;
    this.#waits.linkMs += waits.linkMs;
    this.#waits.digestsMs += waits.digestsMs;
    this.#waits.flushMs += waits.flushMs;
  }

  /** Counts a generation committed during the evacuation, with the blocks it sent. */
  committed(blocks: number): void {
    this.#generations++;
    this.#blocks += blocks;
  }

  /** The breakdown so far, with `wireBytes` sent since the start. */
  breakdown(wireBytes: number): EvacuationBreakdown {
    const round = (seconds: number) => Math.round(seconds * 1000) / 1000;
    return {
      pauseSeconds: round(this.#parts.pause),
      scanSeconds: round(this.#parts.scan),
      sendSeconds: round(this.#parts.send),
      commitSeconds: round(this.#parts.commit),
      verifySeconds: round(this.#parts.verify),
      generations: this.#generations,
      blocks: this.#blocks,
      wireBytes,
      sendWaits: {
        sourceSeconds: round(this.#waits.sourceMs / 1000),
        linkSeconds: round(this.#waits.linkMs / 1000),
        digestsSeconds: round(this.#waits.digestsMs / 1000),
        flushSeconds: round(this.#waits.flushMs / 1000),
      },
    };
  }

  /**
   * Moves to `step` (no-op when already there with the same detail), logging it with
   * `fields`; `detail` says what the step waits for.
   */
  to(step: EvacuationStep, detail: string | null = null, fields: Record<string, unknown> = {}) {
    if (this.settled || (step === this.#step && detail === this.#detail)) return;
    if (step !== this.#step) this.#stepSinceMs = performance.now();
    this.#step = step;
    this.#detail = detail;
    if (step === "hook_done") this.#hookDone = true;
    this.#log("info", "evacuation_step", {
      volume: this.#volume,
      step,
      ...(detail === null ? {} : { detail }),
      ...fields,
    });
  }

  /** Records the final cut: generation `generation` ends the evacuation once committed. */
  cutFinal(generation: number, blocks: number): void {
    this.#finalGeneration = generation;
    this.to("final_cut", null, { generation, blocks });
    this.#resolveCut(generation);
  }

  /** Ends the evacuation with `report`. */
  finish(report: EvacuateReport): void {
    if (this.settled) return;
    this.to("done", null, {
      generation: report.generation,
      seconds: Math.round(report.seconds * 100) / 100,
      verified: report.verified,
    });
    this.#resolve(report);
  }

  /** Ends the evacuation with `error` (the hook failed, the volume was parked…). */
  fail(error: PresyncError): void {
    if (this.settled) return;
    this.#stepSinceMs = performance.now();
    this.#step = "failed";
    this.#detail = error.message;
    this.#log("error", "evacuation_step", {
      volume: this.#volume,
      step: "failed",
      code: error.code,
      error: error.message,
    });
    this.#reject(error);
  }

  /** Its progress for `status`. */
  status(): EvacuationStatus {
    const now = performance.now();
    return {
      step: this.#step,
      stepSeconds: Math.round((now - this.#stepSinceMs) / 100) / 10,
      seconds: Math.round((now - this.#startedMs) / 100) / 10,
      finalGeneration: this.#finalGeneration,
      detail: this.#detail,
    };
  }
}
