/** Labels of one sample: name → value. */
export type Labels = Record<string, string>;

/** A gauge or counter family, for {@linkcode renderMetrics}. */
export interface ScalarFamily {
  name: string;
  help: string;
  type: "gauge" | "counter";
  samples: { labels: Labels; value: number | null }[];
}

/** A histogram family: per label set, cumulative counts per upper bound, sum and count. */
export interface HistogramFamily {
  name: string;
  help: string;
  type: "histogram";
  /** Upper bounds of the buckets, ascending (`+Inf` is added). */
  bounds: readonly number[];
  series: { labels: Labels; counts: readonly number[]; sum: number; count: number }[];
}

/** One metric family. */
export type MetricFamily = ScalarFamily | HistogramFamily;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(labels: Labels): string {
  const text = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
  return text ? `{${text}}` : "";
}

/**
 * Prometheus text exposition format (version 0.0.4); samples with a null or non-finite value
 * are left out.
 */
export function renderMetrics(families: MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${family.help}`, `# TYPE ${family.name} ${family.type}`);
    if (family.type === "histogram") {
      for (const { labels, counts, sum, count } of family.series) {
        family.bounds.forEach((bound, i) => {
          const le = labelText({ ...labels, le: String(bound) });
          lines.push(`${family.name}_bucket${le} ${counts[i]}`);
        });
        lines.push(`${family.name}_bucket${labelText({ ...labels, le: "+Inf" })} ${count}`);
        lines.push(`${family.name}_sum${labelText(labels)} ${sum}`);
        lines.push(`${family.name}_count${labelText(labels)} ${count}`);
      }
      continue;
    }
    for (const { labels, value } of family.samples) {
      if (value === null || !Number.isFinite(value)) continue;
      lines.push(`${family.name}${labelText(labels)} ${value}`);
    }
  }
  return lines.join("\n") + "\n";
}
