/**
 * The process's counters for Prometheus: what the agent and the destination daemon count as
 * it happens, each with a one-line call (`counters.sent(volume, bytes)`), rendered by
 * {@linkcode Counters.families} beside the gauges read from status. Counters only grow; they
 * start at zero with the process, as Prometheus expects.
 *
 * @module
 */

import { PresyncError } from "../errors.ts";
import { VERSION } from "../version.ts";
import type { HistogramFamily, Labels, MetricFamily, ScalarFamily } from "./metrics.ts";

/** Upper bounds of the commit-latency buckets, seconds: a local SSD to a busy disk array. */
export const COMMIT_SECONDS_BOUNDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

class LabelledCounter {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}

  add(labels: Labels, by: number): void {
    if (!(by > 0)) return;
    const key = JSON.stringify(labels);
    const entry = this.#values.get(key) ?? { labels, value: 0 };
    entry.value += by;
    this.#values.set(key, entry);
  }

  family(): ScalarFamily {
    return {
      name: this.name,
      help: this.help,
      type: "counter",
      samples: [...this.#values.values()],
    };
  }
}

class LabelledHistogram {
  readonly #series = new Map<
    string,
    { labels: Labels; counts: number[]; sum: number; count: number }
  >();
  constructor(readonly name: string, readonly help: string, readonly bounds: readonly number[]) {}

  observe(labels: Labels, value: number): void {
    if (!Number.isFinite(value) || value < 0) return;
    const key = JSON.stringify(labels);
    const series = this.#series.get(key) ??
      { labels, counts: this.bounds.map(() => 0), sum: 0, count: 0 };
    this.bounds.forEach((bound, i) => {
      if (value <= bound) series.counts[i]++;
    });
    series.sum += value;
    series.count++;
    this.#series.set(key, series);
  }

  family(): HistogramFamily {
    return {
      name: this.name,
      help: this.help,
      type: "histogram",
      bounds: this.bounds,
      series: [...this.#series.values()],
    };
  }
}

/** The counters of one process; {@linkcode counters} is the process's own. */
export class Counters {
  readonly #sentBytes = new LabelledCounter(
    "presync_sent_bytes_total",
    "Bytes sent to the destination on the wire (compressed), counted after each send attempt.",
  );
  readonly #sentBlocks = new LabelledCounter(
    "presync_sent_blocks_total",
    "Changed blocks of the generations committed at the destination.",
  );
  readonly #receivedBytes = new LabelledCounter(
    "presync_received_bytes_total",
    "Sync-stream bytes received from sources (compressed).",
  );
  readonly #receivedBlocks = new LabelledCounter(
    "presync_received_blocks_total",
    "Blocks received from sources.",
  );
  readonly #committed = new LabelledCounter(
    "presync_generations_committed_total",
    "Generations committed at the destination.",
  );
  readonly #linkCuts = new LabelledCounter(
    "presync_link_cuts_total",
    "Sessions to the destination that ended in a link error.",
  );
  readonly #reconnects = new LabelledCounter(
    "presync_reconnects_total",
    "Sessions to the destination set up again after the first one.",
  );
  readonly #errors = new LabelledCounter(
    "presync_errors_total",
    "Errors, by presync error code.",
  );
  readonly #commitSeconds = new LabelledHistogram(
    "presync_generation_commit_seconds",
    "Time the destination took to commit a generation (prepare, apply, record).",
    COMMIT_SECONDS_BOUNDS,
  );
  #connects = 0;

  /** `bytes` went to the destination for `volume`. */
  sent(volume: string, bytes: number): void {
    this.#sentBytes.add({ volume }, bytes);
  }

  /** A generation of `volume` of `blocks` changed blocks was committed in `commitSeconds`. */
  generationCommitted(volume: string, blocks: number, commitSeconds: number): void {
    this.#sentBlocks.add({ volume }, blocks);
    this.#committed.add({ volume }, 1);
    this.#commitSeconds.observe({ volume }, commitSeconds);
  }

  /** `bytes` of a sync stream arrived for `volume`. */
  received(volume: string, bytes: number): void {
    this.#receivedBytes.add({ volume }, bytes);
  }

  /** A block of `volume` arrived. */
  blockReceived(volume: string): void {
    this.#receivedBlocks.add({ volume }, 1);
  }

  /** Runs the commit of a generation of `volume`, counting it and timing it. */
  async timeCommit<T>(volume: string, commit: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await commit();
    this.#committed.add({ volume }, 1);
    this.#commitSeconds.observe({ volume }, (performance.now() - started) / 1000);
    return result;
  }

  /** A session to the destination came up (every one after the first is a reconnect). */
  connected(): void {
    if (this.#connects++ > 0) this.#reconnects.add({}, 1);
  }

  /** A session to the destination ended in a link error. */
  linkCut(): void {
    this.#linkCuts.add({}, 1);
  }

  /** Counts an error by its code (`UNKNOWN` when it is not a presync error). */
  error(err: unknown): void {
    this.#errors.add({ code: err instanceof PresyncError ? err.code : "UNKNOWN" }, 1);
  }

  /** Every family, with `presync_build_info` first. */
  families(): MetricFamily[] {
    return [
      {
        name: "presync_build_info",
        help: "Always 1; the labels say which presync and Deno this process runs.",
        type: "gauge",
        samples: [{ labels: { version: VERSION, deno: Deno.version.deno }, value: 1 }],
      },
      ...[
        this.#sentBytes,
        this.#sentBlocks,
        this.#receivedBytes,
        this.#receivedBlocks,
        this.#committed,
        this.#linkCuts,
        this.#reconnects,
        this.#errors,
      ].map((c) => c.family()),
      this.#commitSeconds.family(),
    ];
  }
}

/** The process's counters. */
export const counters: Counters = new Counters();
