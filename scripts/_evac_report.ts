/**
 * Writes the evacuation benchmark's figures.
 *
 * @module
 */

import type { PointResult } from "./bench_evacuate.ts";
import { linkName } from "./_evac_contenders.ts";
import {
  type CutBand,
  type RatePoint,
  rateSpec,
  renderFigure,
  type TimeBar,
  timelineSpec,
  timesSpec,
} from "./_evac_plots.ts";

const MiB = 1024 * 1024;

/**
 * Renders `evacuation_times`, `evacuation_presync` and (with a sweep) `evacuation_vs_write_rate`
 * as SVG (and PNG) into `dir`; returns the paths written.
 */
export async function renderEvacuationFigures(
  results: PointResult[],
  dir: string,
): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
  const main = results.filter((r) => r.rateFactor === 1 && r.rateBitsPerSecond === null);
  const bars: TimeBar[] = [];
  // The baselines of the first tracker's runs; presync once per tracker.
  const firstTracker = main[0]?.tracker;
  for (const r of main) {
    const link = linkName(r.link);
    const first = r.tracker === firstTracker;
    if (first) bars.push({ link, contender: "physical limit", seconds: r.limitSeconds });
    bars.push({ link, contender: `presync (${r.tracker})`, seconds: r.presync.wallSeconds });
    if (first && r.rsync) bars.push({ link, contender: "rsync", seconds: r.rsync.seconds });
    if (first && r.full) bars.push({ link, contender: "full copy", seconds: r.full.seconds });
  }
  const written = await renderFigure(timesSpec(bars), `${dir}/evacuation_times`);

  const samples = main.filter((r) => r.tracker === firstTracker).flatMap((r) =>
    r.presync.samples.map((s) => ({
      link: linkName(r.link),
      t: Math.round(s.t * 10) / 10,
      pendingMiB: Math.round(s.pendingBytes / MiB * 100) / 100,
      rpoSeconds: s.rpoSeconds === null ? null : Math.round(s.rpoSeconds * 10) / 10,
    }))
  );
  const cuts: CutBand[] = (main[0]?.cuts ?? []).map((c) => ({
    link: "all",
    from: c.atMs / 1000,
    to: (c.atMs + c.durationMs) / 1000,
  }));
  written.push(...await renderFigure(timelineSpec(samples, cuts), `${dir}/evacuation_presync`));

  const first = results[0]?.link;
  const sweep = results.filter((r) =>
    r.link === first && r.tracker === firstTracker && r.rateBitsPerSecond === null
  );
  if (sweep.length > 1) {
    const points: RatePoint[] = [];
    for (const r of sweep) {
      const writeMiBPerSecond = Math.round(r.writeBytesPerSecond / MiB * 1000) / 1000;
      points.push({ writeMiBPerSecond, contender: "physical limit", seconds: r.limitSeconds });
      const presync = `presync (${r.tracker})`;
      points.push({ writeMiBPerSecond, contender: presync, seconds: r.presync.wallSeconds });
      const predicted = Number(r.presync.before.predictedEvacuationSeconds);
      points.push({
        writeMiBPerSecond,
        contender: `presync predicted (${r.tracker})`,
        seconds: predicted,
      });
      if (r.rsync) points.push({ writeMiBPerSecond, contender: "rsync", seconds: r.rsync.seconds });
      if (r.full) {
        points.push({ writeMiBPerSecond, contender: "full copy", seconds: r.full.seconds });
      }
    }
    written.push(
      ...await renderFigure(rateSpec(points, linkName(first)), `${dir}/evacuation_vs_write_rate`),
    );
  }

  return written;
}
