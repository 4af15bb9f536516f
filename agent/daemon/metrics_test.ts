import assert from "node:assert/strict";
import { renderMetrics } from "./metrics.ts";

Deno.test("metrics render in the Prometheus text format, escaping labels, skipping unknowns", () => {
  const text = renderMetrics([{
    name: "presync_rpo_seconds",
    help: "Age of the last committed cut.",
    type: "gauge",
    samples: [
      { labels: { volume: 'a"b' }, value: 1.5 },
      { labels: { volume: "c" }, value: null },
    ],
  }]);
  assert.equal(
    text,
    "# HELP presync_rpo_seconds Age of the last committed cut.\n" +
      "# TYPE presync_rpo_seconds gauge\n" +
      'presync_rpo_seconds{volume="a\\"b"} 1.5\n',
  );
});
