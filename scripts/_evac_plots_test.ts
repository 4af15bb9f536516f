import assert from "node:assert/strict";
import { rateSpec, secondsLabel, timesSpec } from "./_evac_plots.ts";

/** The colour scale of the first layer that has one: contender → colour. */
function colours(spec: Record<string, unknown>): Map<string, string> {
  const layers = ((spec.spec as Record<string, unknown> | undefined)?.layer ?? spec.layer) as {
    encoding: { color?: { scale: { domain: string[]; range: string[] } } };
  }[];
  const { domain, range } = layers.find((l) => l.encoding.color)!.encoding.color!.scale;
  return new Map(domain.map((c, i) => [c, range[i]]));
}

Deno.test("evacuation figures: a contender has one colour in every figure, and every value a label", () => {
  const times = timesSpec([
    { link: "a", contender: "physical limit", seconds: 0.412 },
    { link: "a", contender: "presync (nbd)", seconds: 2.76 },
    { link: "a", contender: "rsync", seconds: 19.12 },
    { link: "a", contender: "something new", seconds: 221.4 },
  ]);
  const rate = rateSpec([
    { writeMiBPerSecond: 1, contender: "rsync", seconds: 20 },
    { writeMiBPerSecond: 1, contender: "presync (nbd)", seconds: 3 },
  ], "a");
  const a = colours(times);
  const b = colours(rate);
  assert.equal(a.get("rsync"), b.get("rsync"));
  assert.equal(a.get("presync (nbd)"), b.get("presync (nbd)"));
  assert.equal(new Set(a.values()).size, a.size, "two contenders share a colour");
  const labels = (times.data as { values: { label: string }[] }).values.map((v) => v.label);
  assert.deepEqual(labels, ["0.412 s", "2.76 s", "19.1 s", "221 s"]);
  assert.equal(secondsLabel(1234.5), "1230 s");
});
