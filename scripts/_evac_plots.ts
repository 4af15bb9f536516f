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

/**
 * One colour per contender, the same in every figure (Tableau 10). Contenders not named here
 * take the scale's next colours.
 */
export const CONTENDER_COLORS: Record<string, string> = {
  "physical limit": "#4c78a8",
  "presync (scan)": "#f58518",
  "presync (nbd)": "#b279a2",
  "presync predicted (scan)": "#ffbf79",
  "presync predicted (nbd)": "#d6a5c9",
  "rsync": "#e45756",
  "full copy": "#72b7b2",
};

function contenderColor(contenders: string[]): Record<string, unknown> {
  const domain = [...new Set(contenders)];
  const spare = ["#54a24b", "#eeca3b", "#9d755d", "#bab0ac"];
  let next = 0;
  const range = domain.map((c) => CONTENDER_COLORS[c] ?? spare[next++ % spare.length]);
  return { field: "contender", type: "nominal", sort: null, scale: { domain, range } };
}

/** A figure's value label: seconds with 3 significant digits (`0.412 s`, `19.1 s`, `221 s`). */
export function secondsLabel(seconds: number): string {
  return `${Number(seconds.toPrecision(3))} s`;
}

/**
 * Evacuation time per contender and link point (labelled log scale: the contenders differ by
 * orders of magnitude), the physical limit as a bar, each bar labelled with its value.
 */
export function timesSpec(bars: TimeBar[]): Record<string, unknown> {
  // A log scale has no zero: bars start at 0.1 s, or they have no height at all.
  const floor = 0.1;
  const x = {
    field: "contender",
    type: "nominal",
    title: null,
    sort: null,
    axis: { labelAngle: -30 },
  };
  const y = {
    field: "seconds",
    type: "quantitative",
    scale: { type: "log", domainMin: floor },
    title: "seconds (log scale)",
  };
  return {
    title: "Evacuation time: 'evacuate now' to a verified replica",
    data: { values: bars.map((b) => ({ ...b, label: secondsLabel(b.seconds) })) },
    facet: { column: { field: "link", type: "nominal", title: "link" } },
    spec: {
      width: 60 * new Set(bars.map((b) => b.contender)).size,
      height: 260,
      layer: [
        {
          mark: { type: "bar", tooltip: true },
          encoding: {
            x,
            y,
            y2: { datum: floor },
            color: { ...contenderColor(bars.map((b) => b.contender)), legend: null },
          },
        },
        {
          mark: { type: "text", baseline: "bottom", dy: -3, fontSize: 11 },
          encoding: { x, y, text: { field: "label" } },
        },
      ],
    },
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

/** Evacuation time against the workload's write rate, each point labelled with its value. */
export function rateSpec(points: RatePoint[], link: string): Record<string, unknown> {
  const x = { field: "writeMiBPerSecond", type: "quantitative", title: "write rate (MiB/s)" };
  const y = { field: "seconds", type: "quantitative", title: "seconds" };
  const color = contenderColor(points.map((p) => p.contender));
  return {
    title: `Evacuation time vs write rate (${link})`,
    data: { values: points.map((p) => ({ ...p, label: secondsLabel(p.seconds) })) },
    layer: [
      { mark: { type: "line", point: true }, encoding: { x, y, color } },
      {
        mark: { type: "text", align: "left", dx: 5, dy: -5, fontSize: 10 },
        encoding: { x, y, color: { ...color, legend: null }, text: { field: "label" } },
      },
    ],
    width: 420,
    height: 240,
  };
}
