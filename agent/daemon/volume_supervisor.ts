import { counters } from "./counters.ts";
import type { Logger } from "../log.ts";
import { Backoff } from "./backoff.ts";
import { asPresyncError, faultFix } from "./volume_faults.ts";
import type { VolumeLink, VolumePipeline } from "./volume_pipeline.ts";

/** Options of {@linkcode superviseVolume}. */
export interface SuperviseOptions {
  /** Opens a new link of the volume on the current session. */
  openLink(): Promise<VolumeLink>;
  /** False once the session ended or the agent stops: then the supervisor returns. */
  alive(): boolean;
  /** Waits `ms`, waking early when something changes (resume, evacuate, stop). */
  sleep(ms: number): Promise<void>;
  log: Logger;
  /** Uniform in [0, 1) (default `Math.random`), for the retry jitter. */
  random?: () => number;
}

/**
 * Runs one volume on one session and keeps its faults its own: a retryable error (the
 * destination's disk is full, the replica is exported, a block was corrupted, the stream was
 * reset) retries this volume on a new stream after a backoff while the other volumes go on;
 * a fault that needs the operator (resized image, another agent holding the volume, stale
 * state, a damaged file) parks the volume with a log line naming the cause and the fix.
 * Returns when the session ends (the connection loop reconnects), or once the volume parked.
 */
export async function superviseVolume(
  pipeline: VolumePipeline,
  options: SuperviseOptions,
): Promise<void> {
  const { log, alive } = options;
  const random = options.random ?? Math.random;
  const backoff = new Backoff();
  while (alive() && !pipeline.parked) {
    const commitsBefore = pipeline.commits;
    let failure = null;
    try {
      const link = await options.openLink();
      try {
        pipeline.attach(link);
      } catch (err) {
        await link.close();
        throw err;
      }
      await pipeline.run(alive, options.sleep);
    } catch (err) {
      failure = asPresyncError(err);
      counters.error(failure);
    }
    await pipeline.detach(alive() ? null : failure);
    if (failure === null || !alive()) break;
    if (pipeline.commits > commitsBefore) backoff.reset();
    if (!failure.retryable) {
      pipeline.park(failure);
      log("error", "volume_parked", {
        volume: pipeline.name,
        code: failure.code,
        error: failure.message,
        fix: faultFix(failure, pipeline.name),
      });
      break;
    }
    const retryInMs = Math.round(backoff.next(random()));
    pipeline.retrying(failure, retryInMs);
    log("warn", "volume_retry", {
      volume: pipeline.name,
      code: failure.code,
      error: failure.message,
      retryInMs,
    });
    await options.sleep(retryInMs);
  }
  if (!pipeline.parked) await pipeline.detach(null);
}
