import assert from "node:assert/strict";
import { Bitmap } from "../core/mod.ts";
import { countFresh, type FreshCount } from "./fresh_blocks.ts";
import { type VolumeSnapshot, volumeStatus } from "./volume_status.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** `blocks` written since the last cut, from the write-rate estimate (no overlap known). */
function estimated(blocks: number): FreshCount {
  return countFresh(null, null, 0, { freshBlocks: blocks, blocksPerSecond: null });
}

function snapshot(overrides: Partial<VolumeSnapshot> = {}): VolumeSnapshot {
  return {
    name: "vm",
    phase: "sending",
    paused: false,
    blockSize: 64 * KiB,
    committedGeneration: 3,
    committedCutTimeMs: 0,
    pending: null,
    fresh: estimated(0),
    folds: false,
    totalBlocks: 100,
    wireBytesPerBlock: 0,
    wireBytesPerPage: 0,
    pages: null,
    digestsFirst: false,
    commitSecondsPerBlock: 0,
    currentSend: null,
    limitBytesPerSecond: Infinity,
    probeBytesPerSecond: 0,
    rawBytes: 0,
    wireBytes: 0,
    goodputBytesPerSecond: 0,
    scanSeconds: 0,
    scanSource: "last_cut",
    quickestCommitMs: 0,
    baseRttMs: null,
    lastError: null,
    lastErrorCode: null,
    evacuation: null,
    ...overrides,
  };
}

Deno.test("status: pending bytes are the unacknowledged blocks plus fresh writes, compressed", () => {
  using dirty = new Bitmap(100).setRange(0, 40);
  using acked = new Bitmap(100).setRange(0, 10);
  const s = volumeStatus(
    snapshot({
      pending: { generation: 4, cutTimeMs: 0, dirty, acked },
      fresh: estimated(5),
      rawBytes: 1000,
      wireBytes: 500,
    }),
    undefined,
  );
  assert.equal(s.pendingBytes, 35 * 64 * KiB * 0.5);
  assert.equal(s.generationBytes, 40 * 64 * KiB * 0.5);
  assert.equal(s.predictedEvacuationSeconds, null, "no link speed measured yet");
  assert.equal(s.prediction?.freshSource, "write_rate");
});

Deno.test("status: an idle volume shows the tracker's dirty set as pending, and predicts it", () => {
  // 160 MiB written through the NBD tracker since the last cut, nothing in flight.
  const blocks = 160 * MiB / (64 * KiB);
  const s = volumeStatus(
    snapshot({
      phase: "idle",
      totalBlocks: 16_384,
      fresh: {
        blocks,
        estimatedBlocks: 0,
        unackedOverlap: 0,
        generationOverlap: 0,
        source: "tracker",
        asOfSeconds: 0,
        pages: null,
      },
      wireBytesPerBlock: 32 * KiB,
      goodputBytesPerSecond: 10 * MiB,
      scanSeconds: 0.02,
      quickestCommitMs: 200,
      baseRttMs: 150,
    }),
    // The last ping, behind a busy link: shown, but the round trips are the base RTT's.
    480,
  );
  assert.equal(s.rttMs, 480);
  assert.equal(s.pendingBytes, blocks * 32 * KiB);
  assert.equal(s.prediction?.freshSource, "tracker");
  assert.equal(s.prediction?.freshBlocks, blocks);
  assert.equal(s.prediction?.linkSource, "goodput");
  assert.equal(
    s.predictedEvacuationSeconds,
    8.22,
    "scan 0.02 + 80 MiB on the wire at 10 MiB/s + commit 0.2 (no round trip of its own)",
  );
});

Deno.test("status: a parked volume shows its fault and code, not 'paused'", () => {
  const s = volumeStatus(
    snapshot({
      phase: "parked",
      paused: true,
      lastError: "image resized",
      lastErrorCode: "VOLUME_MISMATCH",
    }),
    undefined,
  );
  assert.equal(s.state, "parked");
  assert.equal(s.paused, true);
  assert.equal(s.lastErrorCode, "VOLUME_MISMATCH");
  assert.equal(volumeStatus(snapshot({ paused: true }), undefined).state, "paused");
  const evacuated = volumeStatus(snapshot({ phase: "evacuated", fresh: estimated(9) }), undefined);
  assert.equal(evacuated.pendingBytes, 0);
  assert.equal(evacuated.prediction, null);
});
