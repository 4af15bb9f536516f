import { CommitTimes } from "./commit_times.ts";
import { counters } from "./counters.ts";
import type { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ReplicaCheck } from "../net/sync_messages.ts";
import type { VmControl } from "../qemu/mod.ts";
import { RateLimiter, throttle } from "../rate_limiter.ts";
import type { SourceState } from "../source/source_state.ts";
import type { CommittedState, Destination, ResumeInfo } from "../sync/destination.ts";
import { assertResumable } from "../sync/resume_check.ts";
import { sendGeneration } from "../sync/send_generation.ts";
import type { Cut, Tracker } from "../tracker.ts";
import { blockCount, type VolumeIdentity } from "../volume/volume_identity.ts";
import { maskPages, pageMasksSupported } from "../volume/page_masks.ts";
import { runEvacuateHook } from "./evacuate_hook.ts";
import { type EvacuateReport, Evacuation } from "./evacuation.ts";
import { GoodputMeter } from "./goodput_meter.ts";
import { LinkProbe } from "./link_probe.ts";
import type { TransferCounters } from "./paced_destination.ts";
import { PauseGate } from "./pause_gate.ts";
import type { VolumePhase, VolumeSnapshot } from "./volume_status.ts";
import { type CurrentSend, type ScanSource } from "./evacuation_prediction.ts";
import { countFresh, type FreshCount } from "./fresh_blocks.ts";
import { asPresyncError } from "./volume_faults.ts";
import { WriteRate } from "./write_rate.ts";

/** Half the last sample, half the ones before (the first sample alone when there are none). */
function smoothed(before: number, sample: number): number {
  return before ? 0.5 * before + 0.5 * sample : sample;
}

/**
 * Most unacknowledged blocks whose pages `status` counts from the cut's masks (a lookup each;
 * 16 GiB of changed 64 KiB blocks); past it the prediction counts blocks.
 */
const PAGES_COUNTED_BLOCKS = 1 << 18;

/** Burst of the per-volume rate limiter, bytes. */
const RATE_BURST_BYTES = 1 << 20;
/** How long an evacuated volume's loop sleeps between checks, ms. */
const EVACUATED_SLEEP_MS = 60_000;
/** Default of {@linkcode VolumePipelineOptions.evacuatePausedTimeoutMs}. */
export const DEFAULT_EVACUATE_PAUSED_TIMEOUT_MS = 120_000;

/**
 * The cut a folded generation is sent from: the final cut's reads (the VM is paused, so they
 * hold every block as the final cut saw it) and its dirty set. Its page masks, when both cuts
 * know pages: a block of the stopped generation the destination had not staged differs from
 * its committed copy in the pages either cut marks; one it had staged (whose staged copy is
 * the stopped cut's) in those the final cut marks. Without masks the destination's page
 * digests say which pages differ from its copy. A mask that misses a page costs a resend of
 * the block whole (the destination checks every patched block against its hash), never
 * unverified data.
 *
 * `stopped` is the cut of the stopped send (released: only its masks are asked, which stay
 * answerable); `unstaged` its blocks the destination had not staged (freed on release).
 */
function foldedCut(final: Cut, stopped: Cut, unstaged: Bitmap): Cut {
  const finalMask = final.pageMask?.bind(final);
  const stoppedMask = stopped.pageMask?.bind(stopped);
  const masks = finalMask && stoppedMask
    ? {
      pageMask: (block: number): number | undefined => {
        const mine = final.dirty.get(block) ? finalMask(block) : 0;
        if (!unstaged.get(block)) return mine;
        const theirs = stoppedMask(block);
        return mine === undefined || theirs === undefined ? undefined : mine | theirs;
      },
    }
    : {};
  return {
    dirty: final.dirty,
    pointInTime: final.pointInTime,
    ...masks,
    read: (first, count) => final.read(first, count),
    release: () => {
      unstaged.free();
      return final.release();
    },
  };
}

/** One connection of a volume to its destination, as the pipeline uses it. */
export interface VolumeLink {
  /** Where generations go (paced and encoded on the network path). */
  readonly destination: Destination;
  /** The destination's committed state when the link opened. */
  readonly resume: CommittedState;
  /** Asks the destination to check its replica against `merkleRoot`. */
  verify(
    merkleRoot: string,
    rootOnly: boolean,
  ): Promise<{ generation: number; report: ReplicaCheck }>;
  /** Ends the link. Never throws. */
  close(): Promise<void>;
}

/** Options of {@linkcode VolumePipeline}. */
export interface VolumePipelineOptions {
  name: string;
  /** The source image (for the hook's environment). */
  image: string;
  state: SourceState;
  tracker: Tracker;
  /** Time between two cuts when the volume is in sync, ms. */
  intervalMs: number;
  /** Shell command run before the final cut of an evacuation. */
  evacuateHook?: string;
  /** Runs the hook (default: {@linkcode runEvacuateHook}; tests pass their own). */
  runHook?: (command: string, volume: string, image: string) => Promise<void>;
  /**
   * The VM's run state (the qemu tracker's QMP): an evacuation pauses the VM itself before
   * the final cut (after the hook, if any) and lets it run again if the evacuation fails.
   */
  vm?: VmControl;
  /**
   * With `vm`: how long a VM the evacuation paused waits for an unreachable destination
   * before the evacuation fails and the VM runs again, ms (default 120 s).
   */
  evacuatePausedTimeoutMs?: number;
  /** The link's round-trip time now, ms (undefined: not measured yet). */
  rttMs?: () => number | undefined;
  log: Logger;
}

/**
 * One volume's pipeline on the source: cut a generation (right after start, then every
 * interval, or at once for an evacuation), send it, commit it, remember its dirty set as
 * the hot set (sent last next time); evacuate; report its state. It owns the volume's state
 * and tracker, its pause gate, rate limiter, transfer counters, goodput and write-rate
 * estimates, its evacuation and its fault. A link is attached per connection by the
 * supervisor (`volume_supervisor.ts`), which decides what a thrown error means.
 */
export class VolumePipeline {
  readonly name: string;
  readonly image: string;
  readonly state: SourceState;
  readonly tracker: Tracker;
  /** The background rate limit, set by the agent's rate policy. */
  readonly limiter = new RateLimiter(Infinity, RATE_BURST_BYTES, performance.now());
  /** Bytes sent, cumulative across reconnects (live while sending). */
  readonly counters: TransferCounters = { rawBytes: 0, wireBytes: 0 };
  readonly #options: VolumePipelineOptions;
  readonly #gate = new PauseGate();
  readonly #goodput = new GoodputMeter();
  readonly #writes = new WriteRate();
  readonly #probe = new LinkProbe();
  /** Smoothed wire bytes per block of the generations sent (0: none yet). */
  #wireBytesPerBlock = 0;
  /** Smoothed wire bytes per 4 KiB page sent (0: none measured). */
  #wireBytesPerPage = 0;
  /** The lowest RTT seen, ms (Infinity: none yet). */
  #baseRttMs = Infinity;
  /** The last generations' commit times (the round trip, apply, fsync). */
  readonly #commitTimes = new CommitTimes();
  /** The send in progress: when it started and the wire counter then. */
  #sendStart: { ms: number; wireBytes: number; acked: number } | null = null;
  #phase: VolumePhase = "starting";
  #link: VolumeLink | null = null;
  #committed: CommittedState;
  /** The replica's check asked for behind the final generation's commit (see `#send`). */
  #rootCheck: Promise<{ generation: number; report: ReplicaCheck }> | null = null;
  #hot: Bitmap | null = null;
  /** The cut of the generation being sent (postcopy fetches read it), while sending. */
  #cut: Cut | null = null;
  #lastScanMs = 0;
  #commits = 0;
  #evacuation: Evacuation | null = null;
  /** The evacuate hook of the current evacuation: started once, awaited before the final cut. */
  #hook: { evacuation: Evacuation; ok: Promise<boolean> } | null = null;
  #lastError: PresyncError | null = null;
  /** A cut taken whose `state.recordCut` failed: recorded (and sent) before any new cut. */
  #unrecorded: { cut: Cut; cutTimeMs: number; afterHook: boolean } | null = null;
  /** Whether this evacuation paused a running VM (so a failure lets it run again). */
  #vmPaused = false;
  /** Fails the evacuation once the destination stayed unreachable with the VM paused. */
  #pausedTimer: ReturnType<typeof setTimeout> | undefined;
  /** The VM's resume after a failed evacuation, awaited by `close()`. */
  #vmResuming: Promise<void> | null = null;

  constructor(options: VolumePipelineOptions) {
    this.#options = options;
    this.name = options.name;
    this.image = options.image;
    this.state = options.state;
    this.tracker = options.tracker;
    this.#committed = {
      committedGeneration: options.state.committedGeneration,
      merkleRoot: "",
      cutTimeMs: 0,
    };
  }

  /** The volume's identity. */
  get identity(): VolumeIdentity {
    return this.state.identity;
  }

  /** Whether the volume is parked: stopped until `unpark` (a fault that needs the operator). */
  get parked(): boolean {
    return this.#phase === "parked" || this.#phase === "error";
  }

  /** Whether an evacuation runs (every limit lifted). */
  get evacuating(): boolean {
    return this.#evacuation !== null && !this.#evacuation.settled;
  }

  /**
   * While a migration's memory moves: no new generation is cut until its evacuation starts
   * (one in flight goes on), so none is in flight at the switchover, where the final cut
   * would wait for its commit with the VM paused. Set by the agent's `migrate`.
   */
  holdCuts = false;

  /** Generations committed by this process so far. */
  get commits(): number {
    return this.#commits;
  }

  /**
   * Attaches a link: checks that the destination's replica is where this state can resume
   * from, and takes its committed state.
   *
   * @throws {PresyncError} `SOURCE_STATE_STALE` or `GENERATION_MISMATCH` (see
   *   {@linkcode assertResumable}): the volume must be parked
   */
  attach(link: VolumeLink): void {
    assertResumable(this.state, link.resume.committedGeneration);
    clearTimeout(this.#pausedTimer);
    this.#pausedTimer = undefined;
    this.#link = link;
    this.#committed = { ...link.resume };
  }

  /**
   * Detaches the link, if any (closing it): the volume is disconnected. `why` says what broke
   * it, for a running evacuation. Idempotent.
   */
  async detach(why: PresyncError | null): Promise<void> {
    const link = this.#link;
    this.#link = null;
    await link?.close();
    if (!this.parked && this.#phase !== "evacuated") this.#phase = "disconnected";
    if (this.evacuating && why) {
      this.#evacuation!.to("waiting_for_link", `the destination is not reachable: ${why.message}`);
      this.#armPausedTimeout();
    }
  }

  /**
   * Runs the volume on its attached link until `alive()` turns false; `sleep` waits (and
   * wakes early when something changes). Errors are thrown for the supervisor to judge.
   */
  async run(alive: () => boolean, sleep: (ms: number) => Promise<void>): Promise<void> {
    const link = this.#link;
    if (!link) throw new PresyncError(ErrorCode.CONNECTION_LOST, "no link attached");
    while (alive() && this.#link === link) {
      const evacuation = this.evacuating ? this.#evacuation! : null;
      if (evacuation && !this.state.pending && evacuation.finalGeneration !== null) {
        // The final generation committed, but its check was cut off: check it now.
        await this.#finishEvacuation(link, evacuation);
        continue;
      }
      if (this.#phase === "evacuated") {
        // Nothing more to send; the link stays open for verify and status.
        await sleep(EVACUATED_SLEEP_MS);
        continue;
      }
      const pending = this.state.pending;
      if (pending) {
        await this.#send(link, await this.tracker.resume(pending.dirty));
        continue;
      }
      // A paused volume is still cut (so status knows what is pending); sending waits at
      // the gate.
      const dueInMs = evacuation ? 0 : this.#writes.dueInMs(this.#options.intervalMs, Date.now());
      if (dueInMs > 0 || (this.holdCuts && !evacuation)) {
        this.#phase = "idle";
        await sleep(Math.max(50, dueInMs));
        continue;
      }
      await this.#cutAndSend(link);
    }
  }

  async #cutAndSend(link: VolumeLink): Promise<void> {
    const evacuation = this.evacuating ? this.#evacuation! : null;
    // A cut whose recording failed is recorded now: releasing it would lose its dirty set
    // (trackers that know writes hand each write to one cut only).
    let taken = this.#unrecorded;
    this.#unrecorded = null;
    if (!taken) {
      if (evacuation && !(await this.#pauseVm(evacuation))) return;
      const { cut, cutTimeMs } = await this.#takeCut(evacuation);
      // Only once a cut succeeded: a failed one (a resized image) is retried at once.
      this.#writes.seed(this.#committed.cutTimeMs);
      this.#writes.recordCut(
        cut.dirty.popcount(),
        cutTimeMs,
        this.#committed.committedGeneration === 0,
      );
      taken = { cut, cutTimeMs, afterHook: evacuation?.hookDone === true };
    }
    try {
      await this.state.recordCut(taken.cut.dirty, taken.cutTimeMs);
    } catch (err) {
      this.#unrecorded = taken;
      throw err;
    }
    // Final only when cut after the hook paused the VM; else the final cut comes next.
    let cut = taken.cut;
    if (evacuation && taken.afterHook) {
      if (evacuation.detachFinalCut) {
        // Recorded first: a failed copy releases the cut and the pending generation resumes.
        try {
          cut = await evacuation.detachFinalCut(cut);
        } catch (err) {
          await cut.release();
          this.#failEvacuation(asPresyncError(err));
          throw err;
        }
      }
      evacuation.cutFinal(this.state.pending!.generation, cut.dirty.popcount());
    }
    await this.#send(link, cut);
  }

  /** Cuts the tracker, timing the scan (for `evacuation`'s breakdown too, if any). */
  async #takeCut(evacuation: Evacuation | null): Promise<{ cut: Cut; cutTimeMs: number }> {
    this.#phase = "scanning";
    const cutTimeMs = Date.now();
    const scanStart = performance.now();
    const cut = await this.tracker.cut();
    this.#lastScanMs = performance.now() - scanStart;
    evacuation?.timed("scan", this.#lastScanMs / 1000);
    return { cut, cutTimeMs };
  }

  /**
   * Pauses the VM for `evacuation`: runs the evacuate hook and the QMP pause once (the first
   * call starts them, later ones wait for them); false (and the evacuation failed) when either
   * failed.
   */
  #pauseVm(evacuation: Evacuation): Promise<boolean> {
    if (this.#hook?.evacuation !== evacuation) {
      this.#hook = { evacuation, ok: this.#runHook(evacuation) };
    }
    return this.#hook.ok;
  }

  /**
   * Runs the evacuate hook, then pauses the VM through its control when there is one; false
   * (and the evacuation failed, the VM running again) when either failed.
   */
  async #runHook(evacuation: Evacuation): Promise<boolean> {
    // A migration's final cut skips both: QEMU's own migration paused the VM.
    const command = evacuation.skipHook ? undefined : this.#options.evacuateHook;
    const vm = evacuation.skipHook ? undefined : this.#options.vm;
    const started = performance.now();
    try {
      if (command) {
        evacuation.to("hook", null, { command });
        await (this.#options.runHook ?? runEvacuateHook)(command, this.name, this.image);
      }
      if (vm) {
        evacuation.to("hook", "QMP stop");
        // Only a VM this evacuation paused is resumed if it fails: not one paused before.
        const before = await vm.status();
        this.#vmPaused = before.running;
        await vm.pause();
        this.#options.log("info", "vm_paused", { volume: this.name, before: before.state });
      }
      evacuation.timed("pause", (performance.now() - started) / 1000);
    } catch (err) {
      this.#failEvacuation(
        err instanceof PresyncError ? err : new PresyncError(ErrorCode.IO, String(err)),
      );
      return false;
    }
    evacuation.to("hook_done");
    return true;
  }

  /** Fails the running evacuation with `error`; a VM it paused runs again. */
  #failEvacuation(error: PresyncError): void {
    clearTimeout(this.#pausedTimer);
    this.#pausedTimer = undefined;
    this.#evacuation?.fail(error);
    const vm = this.#options.vm;
    if (!this.#vmPaused || !vm) return;
    this.#vmPaused = false;
    const previous = this.#vmResuming ?? Promise.resolve();
    this.#vmResuming = previous.then(() => vm.resume()).then(
      () => this.#options.log("info", "vm_resumed", { volume: this.name, reason: error.code }),
      (err) =>
        this.#options.log("error", "vm_resume_failed", {
          volume: this.name,
          code: err instanceof PresyncError ? err.code : ErrorCode.IO,
          error: `the evacuation failed but the VM could not be resumed: ${String(err)}; ` +
            `resume it by hand (virsh resume, or QMP cont)`,
        }),
    );
  }

  /**
   * While a VM this evacuation paused waits for the destination: fails the evacuation
   * (and resumes the VM) once it waited `evacuatePausedTimeoutMs`.
   */
  #armPausedTimeout(): void {
    if (!this.#vmPaused || !this.evacuating || this.#pausedTimer !== undefined) return;
    const ms = this.#options.evacuatePausedTimeoutMs ?? DEFAULT_EVACUATE_PAUSED_TIMEOUT_MS;
    const timer = setTimeout(() => {
      this.#pausedTimer = undefined;
      if (this.#link || !this.evacuating) return;
      this.#failEvacuation(
        new PresyncError(
          ErrorCode.TIMEOUT,
          `the destination stayed unreachable for ${ms / 1000} s while the VM of ${this.name} ` +
            `was paused for its evacuation: the evacuation failed and the VM runs again ` +
            `(sync goes on when the link is back; run presync evacuate ${this.name} again)`,
          { retryable: true },
        ),
      );
    }, ms);
    Deno.unrefTimer(timer);
    this.#pausedTimer = timer;
  }

  async #send(link: VolumeLink, cut: Cut, resumeFrom?: ResumeInfo): Promise<void> {
    const pending = this.state.pending!;
    this.#rootCheck = null;
    const evacuation = this.evacuating ? this.#evacuation! : null;
    const final = evacuation !== null && evacuation.finalGeneration === pending.generation;
    this.#phase = evacuation ? "evacuating" : "sending";
    evacuation?.to(
      "sending",
      final ? null : `generation ${pending.generation}, before the final cut`,
      { generation: pending.generation },
    );
    const started = performance.now();
    const wireBefore = this.counters.wireBytes;
    const cutTimeMs = pending.cutTimeMs;
    let commitMs = 0;
    let stoppedAt: ResumeInfo | null = null;
    this.#cut = cut;
    this.#sendStart = { ms: started, wireBytes: wireBefore, acked: pending.acked.popcount() };
    try {
      const report = await sendGeneration(this.state, cut, link.destination, {
        hot: this.#hot ?? undefined,
        final,
        onCommit: () => evacuation?.to("commit", null, { generation: pending.generation }),
        ...(final && link.destination.concurrentFlush
          ? {
            behindCommit: (root: string) => {
              this.#rootCheck = link.verify(root, true);
              this.#rootCheck.catch(() => {}); // awaited by #finishEvacuation, if it commits
            },
          }
          : {}),
        stop: () => !final && this.#foldWanted(link),
        ...(resumeFrom ? { resumeFrom } : {}),
      });
      if (report.stopped) {
        report.sent.free();
        const during = this.#evacuation!;
        during.timed("send", (performance.now() - Math.max(started, during.startedAtMs)) / 1000);
        if (started >= during.startedAtMs) during.sendWaited(report.waits);
        stoppedAt = report.stoppedAt;
        return;
      }
      commitMs = report.commitMs;
      const sentBlocks = report.sent.popcount();
      // An evacuation asked for while this generation was in flight counts it too.
      const during = this.evacuating ? this.#evacuation! : null;
      if (during) {
        const since = Math.max(started, during.startedAtMs);
        during.timed("send", (performance.now() - since - commitMs) / 1000);
        during.timed("commit", Math.min(commitMs, performance.now() - since) / 1000);
        if (started >= during.startedAtMs) during.sendWaited(report.waits);
        during.committed(sentBlocks);
      }
      const wire = this.counters.wireBytes - wireBefore;
      if (sentBlocks > 0) {
        this.#wireBytesPerBlock = smoothed(this.#wireBytesPerBlock, wire / sentBlocks);
      }
      if (report.pagesSent > 0) {
        this.#wireBytesPerPage = smoothed(this.#wireBytesPerPage, wire / report.pagesSent);
      }
      this.#hot?.free();
      this.#hot = cut.dirty.clone();
      report.sent.free();
      this.#committed = {
        committedGeneration: report.generation,
        merkleRoot: report.merkleRoot,
        cutTimeMs,
      };
      this.#commitTimes.add(cut.dirty.popcount(), commitMs / 1000, this.#rttSeconds());
      this.#commits++;
      this.#lastError = null;
      counters.generationCommitted(this.name, cut.dirty.popcount(), commitMs / 1000);
      this.#options.log("info", "generation_committed", {
        volume: this.name,
        generation: report.generation,
        bytes: report.bytesSent,
      });
    } finally {
      this.#cut = null;
      this.#sendStart = null;
      this.#probe.abort();
      await cut.release();
      // Time on the wire: the commit is predicted on its own.
      const seconds = (performance.now() - started - commitMs) / 1000;
      counters.sent(this.name, this.counters.wireBytes - wireBefore);
      this.#goodput.record(
        this.counters.wireBytes - wireBefore,
        seconds,
        this.limiter.bytesPerSecond,
      );
      if (this.#phase === "sending" || this.#phase === "evacuating") this.#phase = "idle";
      if (stoppedAt) await this.#fold(link, cut, stoppedAt);
    }
    if (final) await this.#finishEvacuation(link, evacuation);
  }

  /**
   * Whether the generation being sent is to stop and be folded into the evacuation's final
   * cut (docs/STORE.md, "Folding"): an evacuation whose hook paused the VM, a destination
   * that folds, a generation not folded yet and no cut waiting to be recorded.
   */
  #foldWanted(link: VolumeLink): boolean {
    const evacuation = this.evacuating ? this.#evacuation! : null;
    return evacuation !== null && evacuation.hookDone && evacuation.finalGeneration === null &&
      link.destination.folds === true && this.state.pending !== null && !this.state.pending.fold &&
      this.#unrecorded === null && this.#link === link;
  }

  /**
   * Folds the final cut into the pending generation, whose send from `stopped` stopped (that
   * cut is released) leaving the destination at `stoppedAt`: the final cut is taken (the VM
   * is paused), recorded as the generation's fold before anything of it is sent, and the
   * generation is sent again as the final one, from `stoppedAt` (no question to the
   * destination). Blocks the destination staged and the final cut did not re-dirty stay staged.
   */
  async #fold(link: VolumeLink, stopped: Cut, stoppedAt: ResumeInfo): Promise<void> {
    const evacuation = this.#evacuation!;
    const generation = this.state.pending!.generation;
    let unstaged: Bitmap | null = null;
    let resumeFrom: ResumeInfo | null = stoppedAt;
    try {
      const { cut: final, cutTimeMs } = await this.#takeCut(evacuation);
      this.#writes.recordCut(final.dirty.popcount(), cutTimeMs, false);
      let pending;
      try {
        unstaged = this.state.pending!.dirty.clone().andNot(this.state.pending!.acked);
        pending = await this.state.fold(final.dirty);
      } catch (err) {
        // Recorded (as the next generation, after this one) before any new cut.
        this.#unrecorded = { cut: final, cutTimeMs, afterHook: true };
        throw err;
      }
      evacuation.cutFinal(generation, final.dirty.popcount());
      this.#options.log("info", "generation_folded", {
        volume: this.name,
        generation,
        blocks: pending.dirty.popcount(),
        folded: final.dirty.popcount(),
      });
      const cut = foldedCut(final, stopped, unstaged);
      const from = resumeFrom;
      [unstaged, resumeFrom] = [null, null]; // the cut's and the send's now
      await this.#send(link, cut, from);
    } finally {
      unstaged?.free();
      resumeFrom?.staged?.received.free();
    }
  }

  async #finishEvacuation(link: VolumeLink, evacuation: Evacuation): Promise<void> {
    evacuation.to("verify");
    const started = performance.now();
    // Asked for right behind the final commit when the destination answers in order.
    const check = this.#rootCheck ?? link.verify(this.#committed.merkleRoot, true);
    this.#rootCheck = null;
    const { report } = await check;
    evacuation.timed("verify", (performance.now() - started) / 1000);
    this.#phase = "evacuated";
    // The VM stays paused: it is to run at the destination now.
    this.#vmPaused = false;
    const bytesSent = this.counters.wireBytes - evacuation.wireBytesAtStart;
    evacuation.finish({
      volume: this.name,
      seconds: evacuation.seconds,
      bytesSent,
      generation: this.#committed.committedGeneration,
      merkleRoot: report.merkleRoot,
      verified: report.ok && report.rootMatches === true,
      breakdown: evacuation.breakdown(bytesSent),
    });
  }

  /**
   * Waits before `wireBytes` go out: at the pause gate (until `ended`), behind a migration's
   * memory (`Evacuation.sendAfter`), then the rate limit, except during a link probe (see
   * {@linkcode LinkProbe}).
   */
  async pace(wireBytes: number, ended: Promise<unknown>): Promise<void> {
    if (this.#gate.paused) this.#probe.abort();
    await this.#gate.wait(ended);
    const after = this.#evacuation?.sendAfter;
    if (after) await Promise.race([after, ended.then(() => {}, () => {})]);
    if (this.#probe.beforeSend(wireBytes, performance.now(), this.limiter.bytesPerSecond)) return;
    await throttle(this.limiter, wireBytes);
  }

  /**
   * Parks the volume after a fault that needs the operator: it syncs no more until
   * {@linkcode VolumePipeline.unpark}; a running evacuation fails with the fault.
   */
  park(error: PresyncError): void {
    this.#phase = "parked";
    this.#lastError = error;
    this.#failEvacuation(error);
  }

  /** Stops the volume for good because the whole agent stopped with `error`. */
  stopWith(error: PresyncError): void {
    this.#phase = "error";
    this.#lastError = error;
    this.#failEvacuation(error);
  }

  /** Records a fault the supervisor retries after `retryInMs`. */
  retrying(error: PresyncError, retryInMs: number): void {
    if (!this.parked && this.#phase !== "evacuated") this.#phase = "retrying";
    this.#lastError = error;
    this.#evacuation?.to(
      "waiting_for_link",
      `${error.message} (retrying in ${Math.round(retryInMs / 100) / 10} s)`,
    );
    this.#armPausedTimeout();
  }

  /** The destination cannot be reached (`error` says why): the volume waits for the link. */
  linkDown(error: PresyncError): void {
    if (this.parked) return;
    if (this.#phase !== "evacuated") this.#phase = "disconnected";
    this.#lastError = error;
    this.#evacuation?.to("waiting_for_link", `the destination is not reachable: ${error.message}`);
    this.#armPausedTimeout();
  }

  /** Lets a parked volume sync again (its supervisor must be started again). */
  unpark(): void {
    if (this.#phase === "parked") this.#phase = "disconnected";
  }

  /** Stops sending at the next block; tracking goes on. Idempotent. */
  pause(): void {
    this.#gate.close();
  }

  /**
   * Resumes sending. Idempotent.
   *
   * @throws {PresyncError} `VOLUME_EVACUATED` once the volume was evacuated
   */
  resume(): void {
    if (this.#phase === "evacuated") {
      throw new PresyncError(
        ErrorCode.VOLUME_EVACUATED,
        `volume ${this.name} was evacuated (generation ${this.#committed.committedGeneration} ` +
          `verified at the destination): it no longer syncs from here, so there is nothing to ` +
          `resume. To sync it from this site again (its VM back here), restart the agent`,
      );
    }
    this.#gate.open();
  }

  /**
   * Starts (or joins) the evacuation: every limit lifted, the hook, the final cut sent at full
   * speed, committed and its Merkle root checked.
   *
   * With `skipHook` (a migration paused the VM) the hook does not run; `onStart` gets the
   * evacuation (joined or new) to follow its steps.
   *
   * @throws {PresyncError} the volume's fault when it is parked
   */
  evacuate(
    options: { skipHook?: boolean; onStart?: (evacuation: Evacuation) => void } = {},
  ): Promise<EvacuateReport> {
    if (this.parked) {
      return Promise.reject(
        new PresyncError(
          this.#lastError?.code ?? ErrorCode.INVALID_ARGUMENT,
          `volume ${this.name} is ${this.#phase} and cannot be evacuated: ${this.#lastError?.message}`,
        ),
      );
    }
    if (this.#evacuation && this.#evacuation.step !== "failed") {
      options.onStart?.(this.#evacuation);
      return this.#evacuation.promise;
    }
    this.#evacuation = new Evacuation(
      this.name,
      this.counters.wireBytes,
      this.#options.log,
      options.skipHook === true,
    );
    options.onStart?.(this.#evacuation);
    const inFlight = this.state.pending;
    if (this.#link && (this.#phase === "sending" || this.#phase === "scanning")) {
      // A generation is on its way: it goes on at full speed (what it staged counts) while the
      // VM is paused at once, so no write lands after the evacuation was asked for. Once it
      // is, the send stops at the next block and the final cut is folded into it (`#fold`);
      // to a destination that does not fold, the final cut follows its commit.
      const evacuation = this.#evacuation;
      const detail = `generation ${inFlight?.generation ?? "being cut"}, before the final cut`;
      if (inFlight) {
        this.#phase = "evacuating";
        evacuation.to("sending", detail, { generation: inFlight.generation });
      }
      this.#pauseVm(evacuation).then((ok) => {
        if (ok && this.#phase === "evacuating" && evacuation.finalGeneration === null) {
          evacuation.to("sending", detail);
        }
      });
    }
    if (!this.#link) {
      this.#evacuation.to(
        "waiting_for_link",
        this.#lastError
          ? `the destination is not reachable: ${this.#lastError.message}`
          : "not connected to the destination yet",
      );
    }
    this.#gate.open();
    return this.#evacuation.promise;
  }

  /**
   * Asks the destination to verify the replica: its image against its own block hashes, and
   * its Merkle root against the committed generation's root at the source.
   *
   * @throws {PresyncError} `CONNECTION_LOST` (retryable) when the volume is not connected
   */
  async verify(): Promise<{ ok: boolean; generation: number; report: ReplicaCheck }> {
    if (!this.#link) {
      throw new PresyncError(
        ErrorCode.CONNECTION_LOST,
        `volume ${this.name} is not connected to its destination`,
        { retryable: true },
      );
    }
    const { generation, report } = await this.#link.verify(this.#committed.merkleRoot, false);
    return { ok: report.ok, generation, report };
  }

  /**
   * The cut a postcopy fetch of `generation` reads from.
   *
   * @throws {PresyncError} `GENERATION_MISMATCH` (retryable) unless it is being sent now
   */
  cutFor(generation: number): { cut: Cut; identity: VolumeIdentity } {
    if (!this.#cut || this.state.pending?.generation !== generation) {
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `generation ${generation} of ${this.name} is not being sent now`,
        { retryable: true },
      );
    }
    return { cut: this.#cut, identity: this.identity };
  }

  /** What `status` is computed from. */
  snapshot(): VolumeSnapshot {
    const fresh = this.#freshCount();
    const pages = this.#pagesToSend(fresh);
    return {
      name: this.name,
      phase: this.#phase,
      paused: this.#gate.paused,
      blockSize: this.identity.blockSize,
      committedGeneration: this.#committed.committedGeneration,
      committedCutTimeMs: this.#committed.cutTimeMs,
      pending: this.state.pending,
      fresh,
      pages,
      // As the send decides (`sendGeneration`): digests where pages are unknown.
      digestsFirst: this.#digestsFirst(fresh),
      folds: this.#link?.destination.folds === true,
      totalBlocks: blockCount(this.identity),
      wireBytesPerBlock: this.#wireBytesPerBlock,
      wireBytesPerPage: this.#wireBytesPerPage,
      commitSecondsPerBlock: this.#commitTimes.secondsPerBlock,
      currentSend: this.#currentSend(),
      limitBytesPerSecond: this.limiter.bytesPerSecond,
      probeBytesPerSecond: this.#probe.bytesPerSecond,
      rawBytes: this.counters.rawBytes,
      wireBytes: this.counters.wireBytes,
      goodputBytesPerSecond: this.#goodput.bytesPerSecond,
      ...this.#scanEstimate(),
      quickestCommitMs: this.#commitTimes.quickestSeconds * 1000,
      baseRttMs: this.#baseRtt(),
      lastError: this.#lastError?.message ?? null,
      lastErrorCode: this.#lastError?.code ?? null,
      evacuation: this.#evacuation?.status() ?? null,
    };
  }

  /** The blocks written since the last cut, from the tracker's set when it has one. */
  #freshCount(): FreshCount {
    const now = Date.now();
    const fresh = this.#writes.freshBlocks(now);
    const writes = {
      freshBlocks: fresh,
      blocksPerSecond: fresh === null ? null : this.#writes.blocksPerSecond,
    };
    const changes = this.tracker.changesNow();
    try {
      return countFresh(changes, this.state.pending, now, writes);
    } finally {
      changes?.blocks.free();
    }
  }

  /**
   * The pages an evacuation would send, where they are known (`PredictionInputs.pages`): the
   * tracker counts those written since the last cut, the masks of the cut in flight those of
   * its unacknowledged blocks. Null when either is unknown (the scan tracker, a resumed cut)
   * or the replica takes no patches yet (no committed generation: every block goes whole).
   */
  #pagesToSend(fresh: FreshCount): { unacked: number; fresh: number } | null {
    if (fresh.pages === null || this.#committed.committedGeneration === 0) return null;
    const pending = this.state.pending;
    if (!pending) return { unacked: 0, fresh: fresh.pages };
    const cut = this.#cut;
    if (!cut?.pageMask || cut.dirty.size !== pending.dirty.size) return null;
    // A lookup per unacknowledged block: past PAGES_COUNTED_BLOCKS of them, blocks only.
    if (pending.dirty.countAndNot(pending.acked) > PAGES_COUNTED_BLOCKS) return null;
    const { blockSize } = this.identity;
    let unacked = 0;
    using left = pending.dirty.clone().andNot(pending.acked);
    for (const [start, length] of left.extents()) {
      for (let block = start; block < start + length; block++) {
        unacked += maskPages(cut.pageMask(block), blockSize);
      }
    }
    return { unacked, fresh: fresh.pages };
  }

  /**
   * Whether the final send would wait for page digests first, as `sendGeneration` decides:
   * into a replica that takes patches, when the tracker knows no pages or the cut in flight
   * does not (a resumed one; a generation pending with no cut in flight is resumed too).
   */
  #digestsFirst(fresh: FreshCount): boolean {
    if (this.#committed.committedGeneration === 0) return false;
    if (this.#link?.destination.pageDigests === undefined) return false;
    if (!pageMasksSupported(this.identity.blockSize)) return false;
    return fresh.pages === null || (this.state.pending !== null && !this.#cut?.pageMask);
  }

  /** The final cut's scan: the tracker's estimate from its passes, else the last cut's time. */
  #scanEstimate(): { scanSeconds: number; scanSource: ScanSource } {
    const estimate = this.tracker.cutSecondsEstimate?.() ?? null;
    return estimate === null
      ? { scanSeconds: this.#lastScanMs / 1000, scanSource: "last_cut" }
      : { scanSeconds: estimate, scanSource: "scan_passes" };
  }

  /**
   * The base round-trip time (the lowest seen), s: what a round trip costs once the queue the
   * sends built has drained. The current RTT would count that queue again.
   */
  #rttSeconds(): number {
    return (this.#baseRtt() ?? 0) / 1000;
  }

  /** The base round-trip time, ms (null: none measured yet). */
  #baseRtt(): number | null {
    const rtt = this.#options.rttMs?.();
    if (rtt !== undefined) this.#baseRttMs = Math.min(this.#baseRttMs, rtt);
    return Number.isFinite(this.#baseRttMs) ? this.#baseRttMs : null;
  }

  #currentSend(): CurrentSend | null {
    const start = this.#sendStart;
    const pending = this.state.pending;
    if (!start || !pending) return null;
    return {
      seconds: (performance.now() - start.ms) / 1000,
      wireBytes: this.counters.wireBytes - start.wireBytes,
      ackedBlocks: pending.acked.popcount() - start.acked,
    };
  }

  /**
   * Closes the tracker and the state. A cut whose recording failed gets one more try, so
   * that the next start resends it (`state.pending`); if that fails too, it is logged.
   */
  async close(): Promise<void> {
    this.#hot?.free();
    this.#hot = null;
    clearTimeout(this.#pausedTimer);
    await this.#vmResuming;
    const held = this.#unrecorded;
    this.#unrecorded = null;
    try {
      if (held) {
        try {
          await this.state.recordCut(held.cut.dirty, held.cutTimeMs);
          await held.cut.release();
        } catch (err) {
          // Unreleased, the cut stays the tracker's to keep: the qemu tracker's next attach
          // folds its frozen bitmap in.
          this.#options.log("error", "cut_unrecorded", {
            volume: this.name,
            blocks: held.cut.dirty.popcount(),
            code: err instanceof PresyncError ? err.code : ErrorCode.IO,
            error: `a generation's cut could not be recorded: ${String(err)}; unless the ` +
              `tracker kept its writes, remove the volume's state and replica to re-seed it`,
          });
        }
      }
    } finally {
      await this.tracker.close();
      this.state.close();
    }
  }
}
