import assert from "node:assert/strict";
import { Bitmap } from "../core/mod.ts";
import { type VolumeSnapshot, volumeStatus } from "./volume_status.ts";

const KiB = 1024;

function snapshot(overrides: Partial<VolumeSnapshot> = {}): VolumeSnapshot {
  return {
    name: "vm",
    phase: "sending",
    paused: false,
    blockSize: 64 * KiB,
    committedGeneration: 3,
    committedCutTimeMs: 0,
    pending: null,
    freshBlocks: 0,
    rawBytes: 0,
    wireBytes: 0,
    goodputBytesPerSecond: 0,
    lastScanMs: 0,
    lastCommitMs: 0,
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
      freshBlocks: 5,
      rawBytes: 1000,
      wireBytes: 500,
    }),
    undefined,
  );
  assert.equal(s.pendingBytes, 35 * 64 * KiB * 0.5);
  assert.equal(s.generationBytes, 40 * 64 * KiB * 0.5);
  assert.equal(s.predictedEvacuationSeconds, null, "no goodput measured yet");
});

Deno.test("status: the prediction adds scan, transfer, commit and two round trips", () => {
  using dirty = new Bitmap(100).setRange(0, 10);
  using acked = new Bitmap(100);
  const s = volumeStatus(
    snapshot({
      pending: { generation: 4, cutTimeMs: 0, dirty, acked },
      goodputBytesPerSecond: 64 * KiB,
      lastScanMs: 500,
      lastCommitMs: 250,
    }),
    100,
  );
  assert.equal(s.predictedEvacuationSeconds, 0.5 + 10 + 0.25 + 0.2);
  assert.equal(s.rttMs, 100);
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
  assert.equal(
    volumeStatus(snapshot({ phase: "evacuated", freshBlocks: 9 }), undefined).pendingBytes,
    0,
  );
});
