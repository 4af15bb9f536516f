/**
 * The evacuation benchmark's figures: Vega-Lite specs compiled and rendered headless to SVG
 * by Vega, then rasterised to PNG by resvg (WASM) with a system font when one is found.
 *
 * @module
 */

import * as vega from "vega";
import * as vegaLite from "vega-lite";
import { initWasm, Resvg } from "@resvg/resvg-wasm";

/** Fonts tried for the PNG rendering, in order (Debian's fonts-dejavu-core). */
const FONT_PATHS = [
  "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

let resvgReady: Promise<Uint8Array | null> | null = null;

async function loadResvg(): Promise<Uint8Array | null> {
  for (const path of FONT_PATHS) {
    try {
      const font = await Deno.readFile(path);
      const wasm = await Deno.readFile(
        new URL(import.meta.resolve("@resvg/resvg-wasm/index_bg.wasm")),
      );
      await initWasm(wasm);
      return font;
    } catch {
      // Next font; without any, no PNG.
    }
  }
  return null;
}

/** Renders a Vega-Lite spec to `base.svg` and, when a font is found, `base.png`; returns paths. */
export async function renderFigure(spec: Record<string, unknown>, base: string): Promise<string[]> {
  const compiled = vegaLite.compile(
    { $schema: "https://vega.github.io/schema/vega-lite/v6.json", ...spec } as never,
  ).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  await Deno.writeTextFile(`${base}.svg`, svg);
  const written = [`${base}.svg`];
  resvgReady ??= loadResvg();
  const font = await resvgReady;
  if (font) {
    const png = new Resvg(svg, {
      font: {
        fontBuffers: [font],
        defaultFontFamily: "DejaVu Sans",
        sansSerifFamily: "DejaVu Sans",
      },
      fitTo: { mode: "zoom", value: 2 },
    }).render().asPng();
    await Deno.writeFile(`${base}.png`, png);
    written.push(`${base}.png`);
  }
  return written;
}

/** One bar of the evacuation-time figure. */
export interface TimeBar {
  link: string;
  contender: string;
  seconds: number;
}

/** Evacuation time per contender and link point (log scale), the physical limit as a bar. */
export function timesSpec(bars: TimeBar[]): Record<string, unknown> {
  return {
    title: "Evacuation time: 'evacuate now' to a verified replica",
    data: { values: bars },
    mark: { type: "bar", tooltip: true },
    encoding: {
      column: { field: "link", type: "nominal", title: "link" },
      x: {
        field: "contender",
        type: "nominal",
        title: null,
        sort: null,
        axis: { labelAngle: -30 },
      },
      // A log scale has no zero: bars start at 0.1 s, or they have no height at all.
      y: {
        field: "seconds",
        type: "quantitative",
        scale: { type: "log", domainMin: 0.1 },
        title: "seconds (log)",
      },
      y2: { datum: 0.1 },
      color: { field: "contender", type: "nominal", sort: null, legend: null },
    },
    width: 220,
    height: 260,
  };
}

/** A link cut during the pre-sync phase. */
export interface CutBand {
  link: string;
  from: number;
  to: number;
}

/** Pending bytes and RPO over the pre-sync phase, one row per link point, cuts shaded. */
export function timelineSpec(
  samples: { link: string; t: number; pendingMiB: number; rpoSeconds: number | null }[],
  cuts: CutBand[],
): Record<string, unknown> {
  const panel = (field: string, title: string) => ({
    width: 520,
    height: 150,
    layer: [
      {
        data: { values: cuts },
        mark: { type: "rect", color: "#d62728", opacity: 0.18 },
        encoding: { x: { field: "from", type: "quantitative" }, x2: { field: "to" } },
      },
      {
        data: { values: samples },
        mark: { type: "line", interpolate: "step-after" },
        encoding: {
          x: { field: "t", type: "quantitative", title: "seconds into the pre-sync phase" },
          y: { field, type: "quantitative", title },
          color: { field: "link", type: "nominal", title: "link" },
        },
      },
    ],
  });
  return {
    title: "Pre-sync under a write workload (red bands: link cut)",
    vconcat: [panel("pendingMiB", "pending (MiB, wire)"), panel("rpoSeconds", "RPO (s)")],
  };
}

/** One point of the evacuation-time-vs-write-rate figure. */
export interface RatePoint {
  writeMiBPerSecond: number;
  contender: string;
  seconds: number;
}

/** Evacuation time against the workload's write rate. */
export function rateSpec(points: RatePoint[], link: string): Record<string, unknown> {
  return {
    title: `Evacuation time vs write rate (${link})`,
    data: { values: points },
    mark: { type: "line", point: true },
    encoding: {
      x: { field: "writeMiBPerSecond", type: "quantitative", title: "write rate (MiB/s)" },
      y: { field: "seconds", type: "quantitative", title: "seconds" },
      color: { field: "contender", type: "nominal", sort: null },
    },
    width: 420,
    height: 240,
  };
}
