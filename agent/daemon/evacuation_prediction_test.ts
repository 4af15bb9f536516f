import assert from "node:assert/strict";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import {
  MIN_CURRENT_SEND_SECONDS,
  predictEvacuation,
  type PredictionInputs,
} from "./evacuation_prediction.ts";
import { countFresh, type FreshCount } from "./fresh_blocks.ts";
import { maskPopcount } from "../volume/page_masks.ts";
import { LinkProbe, PROBE_EVERY_MS, PROBE_MS } from "./link_probe.ts";

const KiB = 1024;
const BLOCK = 64 * KiB;

/** A seeded link and volume: what an evacuation would really cost (the ground truth). */
interface Scenario {
  linkBytesPerSecond: number;
  rttMs: number;
  scanSeconds: number;
  /** A commit's time beyond its round trip, per block of the generation. */
  commitPerBlock: number;
  commitSeconds: number;
  /** Wire bytes one dirty block costs (compression, zero markers, headers). */
  wirePerBlock: number;
  totalBlocks: number;
}

function scenario(prng: Prng): Scenario {
  return {
    linkBytesPerSecond: (10 + prng.int(190)) * 1e6 / 8,
    rttMs: 5 + prng.int(300),
    scanSeconds: prng.int(2000) / 1000,
    commitSeconds: prng.int(500) / 1000,
    commitPerBlock: prng.int(100) / 1e6,
    wirePerBlock: BLOCK * (0.2 + prng.int(800) / 1000),
    totalBlocks: 16_384 + prng.int(131_072),
  };
}

/**
 * The evacuation's real duration: every block crosses the link once; each generation (of
 * `generations` blocks each) has no round trip of its own (its resume state is known from
 * the session's last commit, its begin travels with its blocks, its final flush right before
 * its commit) and a commit that applies its blocks (at least as long as the last commit); the
 * Merkle root check is asked for behind the commit.
 */
function truth(s: Scenario, blocks: number, generations: number[]): number {
  const rtt = s.rttMs / 1000;
  const commits = generations.map((n) => Math.max(s.commitSeconds, rtt + s.commitPerBlock * n));
  return s.scanSeconds + blocks * s.wirePerBlock / s.linkBytesPerSecond +
    commits.reduce((a, b) => a + b, 0);
}

/** `blocks` written since the last cut, from the write-rate estimate (no overlap known). */
function estimated(blocks: number): FreshCount {
  return countFresh(null, null, 0, { freshBlocks: blocks, blocksPerSecond: null });
}

function inputs(s: Scenario, overrides: Partial<PredictionInputs>): PredictionInputs {
  return {
    blockSize: BLOCK,
    totalBlocks: s.totalBlocks,
    generationInFlight: false,
    folds: false,
    unackedBlocks: 0,
    generationBlocks: 0,
    fresh: estimated(0),
    wireBytesPerBlock: s.wirePerBlock,
    compressionRatio: 1,
    pages: null,
    wireBytesPerPage: 0,
    digestsFirst: false,
    goodputBytesPerSecond: 0,
    currentSend: null,
    limitBytesPerSecond: Infinity,
    probeBytesPerSecond: 0,
    scanSeconds: s.scanSeconds,
    scanSource: "scan_passes",
    commitSeconds: s.commitSeconds,
    commitSecondsPerBlock: s.commitPerBlock,
    rttMs: s.rttMs,
    ...overrides,
  };
}

function assertClose(actual: number | null, expected: number, what: string): void {
  assert.ok(actual !== null, `${what}: no prediction`);
  assert.ok(
    Math.abs(actual - expected) <= 1e-6 * Math.max(1, expected),
    `${what}: predicted ${actual} s, the evacuation takes ${expected} s`,
  );
}

seededTest("prediction, rate-bound: the link comes from a probe, not from the limit", (prng) => {
  for (let i = 0; i < 50; i++) {
    const s = scenario(prng);
    // --rate holds the sends at 10–50% of the link: goodput ignored them, the send in progress
    // runs at the limit.
    const limit = s.linkBytesPerSecond * (0.1 + prng.int(400) / 1000);
    const seconds = MIN_CURRENT_SEND_SECONDS + prng.int(100);
    const currentSend = { seconds, wireBytes: limit * seconds, ackedBlocks: 10 };
    const fresh = 1 + prng.int(4000);
    const bound = inputs(s, {
      limitBytesPerSecond: limit,
      currentSend,
      fresh: estimated(fresh),
    });
    assert.equal(
      predictEvacuation(bound).seconds,
      null,
      "without a probe nothing is known of the link: no prediction from the limit",
    );
    const p = predictEvacuation({ ...bound, probeBytesPerSecond: s.linkBytesPerSecond });
    assert.equal(p.linkSource, "probe");
    assertClose(p.seconds, truth(s, fresh, [fresh]), `scenario ${i}`);
  }
});

seededTest(
  "prediction, first sync: the send in progress gives the link and the block cost",
  (prng) => {
    for (let i = 0; i < 50; i++) {
      const s = scenario(prng);
      const acked = 1 + prng.int(s.totalBlocks - 1);
      const seconds = acked * s.wirePerBlock / s.linkBytesPerSecond;
      if (seconds < MIN_CURRENT_SEND_SECONDS) continue;
      const p = predictEvacuation(inputs(s, {
        generationInFlight: true,
        unackedBlocks: s.totalBlocks - acked,
        generationBlocks: s.totalBlocks,
        // Nothing finished yet: no goodput, no per-block cost; a raw ratio that would mislead.
        wireBytesPerBlock: 0,
        compressionRatio: 1,
        currentSend: { seconds, wireBytes: acked * s.wirePerBlock, ackedBlocks: acked },
      }));
      assert.equal(p.linkSource, "current_send");
      assert.equal(p.commits, 2, "the first generation commits, then the final one");
      assertClose(p.seconds, truth(s, s.totalBlocks - acked, [s.totalBlocks, 0]), `scenario ${i}`);
    }
  },
);

seededTest(
  "prediction, folding destination: one generation, a block both in flight and rewritten crosses once",
  (prng) => {
    for (let i = 0; i < 50; i++) {
      const s = scenario(prng);
      const unacked = 1 + prng.int(s.totalBlocks - 1);
      const generation = unacked + prng.int(s.totalBlocks - unacked);
      // Fresh blocks: some unacknowledged in the generation, some acknowledged in it (sent,
      // then rewritten: they cross again), the rest outside it.
      const inUnacked = prng.int(unacked + 1);
      const inAcked = prng.int(generation - unacked + 1);
      const outside = prng.int(s.totalBlocks - generation + 1);
      const fresh: FreshCount = {
        blocks: inUnacked + inAcked + outside,
        estimatedBlocks: 0,
        unackedOverlap: inUnacked,
        generationOverlap: inUnacked + inAcked,
        source: "tracker",
        asOfSeconds: 0,
        pages: null,
      };
      const base = inputs(s, {
        generationInFlight: true,
        unackedBlocks: unacked,
        generationBlocks: generation,
        fresh,
        goodputBytesPerSecond: s.linkBytesPerSecond,
      });
      const separate = predictEvacuation(base);
      const folded = predictEvacuation({ ...base, folds: true });
      assert.equal(separate.commits, 2);
      assert.equal(separate.blocks, unacked + fresh.blocks, "committed first: both sets cross");
      assertClose(
        separate.seconds,
        truth(s, unacked + fresh.blocks, [generation, fresh.blocks]),
        `scenario ${i}, separate`,
      );
      assert.equal(folded.commits, 1, "one commit of the folded generation");
      const sent = unacked + inAcked + outside;
      assert.equal(folded.blocks, sent, `scenario ${i}: the union, not the sum`);
      assert.equal(folded.overlapBlocks, inUnacked);
      // One generation of all its blocks, plus the flush that stops the send (no resume query).
      const union = generation + outside;
      const rtt = s.rttMs / 1000;
      assertClose(folded.seconds, truth(s, sent, [union]) + rtt, `scenario ${i}`);
      assert.ok(folded.seconds! <= separate.seconds! + 1e-9, `scenario ${i}: a fold is not longer`);
    }
  },
);

seededTest(
  "prediction, pages known: the bytes follow the pages, a fold's shared blocks sending the union of theirs",
  (prng) => {
    const perBlock = BLOCK / (4 * KiB);
    for (let i = 0; i < 20; i++) {
      const s = scenario(prng);
      // The generation in flight's unacknowledged blocks and the blocks written since its cut,
      // each block with a few pages drawn independently; some blocks in both.
      const unacked = 500 + prng.int(3000);
      const onlyFresh = prng.int(3000);
      const inBoth = prng.int(unacked + 1);
      const draw = (pages: number) => {
        let mask = 0;
        for (let p = 0; p < pages; p++) mask |= 1 << prng.int(perBlock);
        return mask >>> 0;
      };
      const density = [1 + prng.int(8), 1 + prng.int(8)];
      const cutMasks = Array.from({ length: unacked }, () => draw(density[0]));
      const freshMasks = Array.from({ length: inBoth + onlyFresh }, () => draw(density[1]));
      const count = (masks: number[]) => masks.reduce((n, m) => n + maskPopcount(m), 0);
      // The union: fresh blocks 0…inBoth-1 are the unacknowledged blocks 0…inBoth-1.
      const union = count(cutMasks.map((m, b) => b < inBoth ? (m | freshMasks[b]) >>> 0 : m)) +
        count(freshMasks.slice(inBoth));
      const fresh: FreshCount = {
        blocks: inBoth + onlyFresh,
        estimatedBlocks: 0,
        unackedOverlap: inBoth,
        generationOverlap: inBoth,
        source: "tracker",
        asOfSeconds: 0,
        pages: count(freshMasks),
      };
      const wirePerPage = 4 * KiB * (0.2 + prng.int(800) / 1000);
      const base = inputs(s, {
        generationInFlight: true,
        folds: true,
        unackedBlocks: unacked,
        generationBlocks: unacked,
        fresh,
        goodputBytesPerSecond: s.linkBytesPerSecond,
        pages: { unacked: count(cutMasks), fresh: fresh.pages! },
        wireBytesPerPage: wirePerPage,
      });
      const folded = predictEvacuation(base);
      assert.ok(folded.pages !== null, "counted in pages");
      const error = folded.pages! / union - 1;
      assert.ok(
        Math.abs(error) <= 0.05,
        `scenario ${i}: ${folded.pages} pages predicted, the union has ${union} (${inBoth} shared blocks)`,
      );
      assert.ok(Math.abs(folded.bytes - folded.pages! * wirePerPage) <= wirePerPage, "bytes");
      // Not folded, both sets cross whole: the sum; no cost per page measured yet: blocks.
      const separate = predictEvacuation({ ...base, folds: false });
      assert.equal(separate.pages, count(cutMasks) + fresh.pages!);
      // Pages unknown: the send waits a round trip for the first page digests.
      const blind = predictEvacuation({ ...base, pages: null });
      const digests = predictEvacuation({ ...base, pages: null, digestsFirst: true });
      assertClose(digests.seconds, blind.seconds! + s.rttMs / 1000, `scenario ${i}: digests`);
      const unmeasured = predictEvacuation({ ...base, wireBytesPerPage: 0 });
      assert.equal(unmeasured.pages, null);
      assert.equal(unmeasured.bytes, Math.round(folded.blocks * s.wirePerBlock));
    }
  },
);

seededTest("prediction: unknown writes since the last cut make no prediction", (prng) => {
  for (let i = 0; i < 20; i++) {
    const s = scenario(prng);
    const base = inputs(s, { goodputBytesPerSecond: s.linkBytesPerSecond });
    const fresh = prng.int(s.totalBlocks);
    const known = predictEvacuation({ ...base, fresh: estimated(fresh) });
    assert.equal(known.freshSource, "write_rate");
    assertClose(known.seconds, truth(s, fresh, [fresh]), `scenario ${i}`);
    const unknown = predictEvacuation({
      ...base,
      fresh: { ...estimated(0), source: "unknown" },
    });
    assert.equal(unknown.freshSource, "unknown");
    assert.equal(unknown.seconds, null, "no write rate measured: no prediction, not zero writes");
  }
});

/**
 * Drives a probe over a simulated link of `linkBytesPerSecond` whose session takes bytes as
 * fast as the link acknowledges them once a window of `windowBytes` is full.
 */
function simulate(
  probe: LinkProbe,
  linkBytesPerSecond: number,
  windowBytes: number,
  limitBytesPerSecond: number,
  fromMs: number,
  untilMs: number,
): { unthrottledBytes: number; nowMs: number } {
  let now = fromMs;
  let inFlight = 0;
  let unthrottledBytes = 0;
  const piece = 64 * KiB;
  while (now < untilMs) {
    const free = probe.beforeSend(piece, now, limitBytesPerSecond);
    if (free) unthrottledBytes += piece;
    // Unthrottled: the window takes it at once while it has room, else at the link's pace;
    // throttled: the limiter spaces it out.
    const stepMs = free
      ? (inFlight + piece <= windowBytes ? 0 : piece / linkBytesPerSecond * 1000)
      : piece / limitBytesPerSecond * 1000;
    inFlight = Math.max(0, inFlight + piece - stepMs * linkBytesPerSecond / 1000);
    now += stepMs;
  }
  return { unthrottledBytes, nowMs: now };
}

seededTest("link probe: measures the link under a binding rate limit, 1% of the time", (prng) => {
  for (let i = 0; i < 20; i++) {
    const link = (10 + prng.int(190)) * 1e6 / 8;
    const limit = link * (0.1 + prng.int(400) / 1000);
    const window = (256 + prng.int(4096)) * KiB;
    const probe = new LinkProbe();
    const start = prng.int(1_000_000);
    const { unthrottledBytes } = simulate(
      probe,
      link,
      window,
      limit,
      start,
      start + 2 * PROBE_EVERY_MS,
    );
    const error = Math.abs(probe.bytesPerSecond - link) / link;
    assert.ok(error < 0.05, `probe measured ${probe.bytesPerSecond} B/s of a ${link} B/s link`);
    // Two probes in two periods, each PROBE_MS at the link's speed plus one window (and a piece).
    assert.ok(
      unthrottledBytes <= 2 * (link * PROBE_MS / 1000 + window + 2 * 64 * KiB),
      `${unthrottledBytes} bytes went past the limit of ${limit} B/s on a ${link} B/s link`,
    );
  }
  const lifted = new LinkProbe();
  assert.equal(lifted.beforeSend(1, 0, Infinity), false, "no probe without a limit");
  assert.equal(lifted.beforeSend(1, 1, 1000), true, "a limit: the first send probes");
  lifted.abort();
  assert.equal(lifted.probing, false);
  assert.equal(lifted.bytesPerSecond, 0, "an interrupted probe measures nothing");
  assert.equal(lifted.beforeSend(1, 2, 1000), false, "the next send keeps the limit");
  assert.equal(lifted.beforeSend(1, 1 + PROBE_EVERY_MS, 1000), true, "a period later: a probe");
});
