import assert from "node:assert/strict";
import { seededTest } from "../../fixtures/seeded.ts";
import { reportProgress, type SendingStatus } from "./_agent_progress.ts";
import { describeProgress, DrainProgress, formatDuration } from "./_progress.ts";

const MiB = 1024 * 1024;

Deno.test("pending above the generation's size raises the total instead of going negative", () => {
  const progress = new DrainProgress();
  const first = progress.update(5 * MiB, 4 * MiB, 0);
  assert.deepStrictEqual([first.fraction, first.doneBytes, first.totalBytes], [0, 0, 5 * MiB]);
  const later = progress.update(1 * MiB, 4 * MiB, 2000);
  assert.equal(later.totalBytes, 5 * MiB);
  assert.equal(later.fraction, 0.8);
  assert.equal(later.bytesPerSecond, 2 * MiB);
  assert.equal(later.etaSeconds, 0.5);
  assert.equal(describeProgress(later), "4.0 MiB of 5.0 MiB, 16.8 Mbit/s, 1s left");
});

seededTest(
  "progress stays in range under any readings (negative, NaN, shrinking totals)",
  (prng) => {
    const odd = [NaN, -1, Infinity, -Infinity, 0];
    const reading = () =>
      prng.int(6) === 0 ? odd[prng.int(odd.length)] : prng.int(64 * MiB) * (prng.int(2) ? 1 : 0.5);
    for (let run = 0; run < 50; run++) {
      const progress = new DrainProgress();
      let now = prng.int(1000);
      for (let i = 0; i < 100; i++) {
        now += prng.int(3000);
        const p = progress.update(reading(), reading(), now);
        const text = describeProgress(p);
        assert.ok(p.fraction >= 0 && p.fraction <= 1, `fraction ${p.fraction}`);
        assert.ok(p.doneBytes >= 0 && p.remainingBytes <= p.totalBytes, JSON.stringify(p));
        assert.ok(Number.isFinite(p.totalBytes), JSON.stringify(p));
        assert.ok(p.etaSeconds === null || (p.etaSeconds >= 0 && Number.isFinite(p.etaSeconds)));
        assert.doesNotMatch(text, /NaN|Infinity|-\d/, text);
      }
    }
  },
);

Deno.test("durations for people", () => {
  assert.equal(formatDuration(12.4), "12s");
  assert.equal(formatDuration(247), "4m07s");
  assert.equal(formatDuration(7500), "2h05m");
  assert.equal(formatDuration(-3), "0s");
});

Deno.test("off a terminal, progress is a structured log event, never a bar", async () => {
  const events: { event: string; fields: Record<string, unknown> }[] = [];
  const status: SendingStatus[] = [{
    name: "vm",
    state: "sending",
    committedGeneration: 2,
    generationPendingBytes: 6 * MiB,
    generationBytes: 4 * MiB,
  }];
  const stop = reportProgress(
    () => status,
    (_, event, fields = {}) => events.push({ event, fields }),
    null,
  );
  try {
    const deadline = Date.now() + 10_000;
    while (events.length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    stop();
  }
  assert.equal(events[0]?.event, "progress");
  assert.deepStrictEqual(events[0].fields, {
    volume: "vm",
    generation: 3,
    state: "sending",
    remainingBytes: 6 * MiB,
    totalBytes: 6 * MiB,
    percent: 0,
    etaSeconds: null,
  });
});
