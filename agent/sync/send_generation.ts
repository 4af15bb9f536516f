import { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { SourceState } from "../source/source_state.ts";
import { toHex } from "../hex.ts";
import type { StagedBlock } from "../store/staging_area.ts";
import type { Cut } from "../tracker.ts";
import { blockEntries, ENTRY_BYTES, isZeroEntry } from "../volume/block_hashes.ts";
import { assertSameVolume, reseedHint } from "../volume/volume_identity.ts";
import type { Destination } from "./destination.ts";
import { YIELD_EVERY_BYTES, yieldToEventLoop } from "../yield.ts";

/** Most bytes read from the source in one go while sending. */
export const SEND_READ_BYTES = 8 * 1024 * 1024;
/**
 * Bytes staged between two flushes (acknowledgement points): what a destination crash can
 * cost in resent data at most.
 */
export const FLUSH_EVERY_BYTES = 16 * 1024 * 1024;

/** Options of {@linkcode sendGeneration}. */
export interface SendOptions {
  /** Called after each acknowledgement point (tests kill there; benchmarks write there). */
  afterFlush?: () => void | Promise<void>;
  /**
   * Blocks likely to be written again soon (e.g. the previous generation's dirty set):
   * sent last, so that writes landing while the generation is in flight are picked up by
   * the read instead of costing a resend in the next generation.
   */
  hot?: Bitmap;
}

/** What {@linkcode sendGeneration} did. */
export interface SendReport {
  generation: number;
  /** The blocks sent in this call (the caller frees it). */
  sent: Bitmap;
  /** Data bytes sent (zero blocks count 0). */
  bytesSent: number;
  /** Blocks sent as zero markers. */
  zeroBlocks: number;
  /** Blocks of the generation the destination already had durably staged. */
  alreadyStaged: number;
  /** Merkle root of the committed generation (hex). */
  merkleRoot: string;
}

/**
 * Sends the pending generation of `state` to `destination` and commits it, resuming where
 * an earlier attempt stopped: only blocks the destination has not durably staged move.
 *
 * Every block's manifest entry is written and synced at the source *before* the block is
 * sent, so the source's manifest never claims a block the destination might lack in
 * another state; a block sent twice is harmless.
 */
export async function sendGeneration(
  state: SourceState,
  cut: Cut,
  destination: Destination,
  hooks: SendOptions = {},
): Promise<SendReport> {
  const pending = state.pending;
  if (!pending) {
    throw new PresyncError(
      ErrorCode.GENERATION_MISMATCH,
      `no generation of ${state.identity.name} is pending`,
    );
  }
  const { generation } = pending;
  const info = await destination.resumeInfo();
  assertSameVolume(info.identity, state.identity);
  const report: SendReport = {
    generation,
    sent: new Bitmap(pending.dirty.size),
    bytesSent: 0,
    zeroBlocks: 0,
    alreadyStaged: 0,
    merkleRoot: "",
  };
  try {
    if (info.committedGeneration === generation) {
      // Committed before the acknowledgement reached us: only the bookkeeping is left.
      info.staged?.received.free();
      report.merkleRoot = info.merkleRoot;
      await state.recordCommitted(generation);
      return report;
    }
    if (info.committedGeneration !== generation - 1) {
      info.staged?.received.free();
      throw new PresyncError(
        ErrorCode.GENERATION_MISMATCH,
        `destination volume \`${state.identity.name}\` is at generation ${info.committedGeneration} ` +
          `but the source is sending generation ${generation} (was the replica deleted or ` +
          `replaced?); ${reseedHint(state.identity.name)}`,
      );
    }
    await destination.beginGeneration(generation, pending.dirty, pending.cutTimeMs);
    using toSend = pending.dirty.clone();
    if (info.staged?.generation === generation) {
      report.alreadyStaged = info.staged.received.clone().and(pending.dirty).popcount();
      toSend.andNot(info.staged.received);
    }
    info.staged?.received.free();
    await sendBlocks(state, cut, destination, toSend, report, hooks);
    report.merkleRoot = toHex(await state.manifest.root());
    await destination.commit(generation, report.merkleRoot);
    await state.recordCommitted(generation);
    return report;
  } catch (err) {
    report.sent.free();
    throw err;
  }
}

/**
 * `blockEntries` in slices of about 256 KiB, yielding to the event loop between slices: an
 * NBD server in the same process (the nbd tracker) keeps answering the VM within a fraction
 * of a millisecond instead of waiting for a whole 8 MiB batch to be hashed.
 */
async function entriesYielding(data: Uint8Array, blockSize: number): Promise<Uint8Array> {
  const perSlice = Math.max(1, Math.floor(YIELD_EVERY_BYTES / blockSize)) * blockSize;
  if (data.length <= perSlice) return blockEntries(data, blockSize);
  const out = new Uint8Array(Math.ceil(data.length / blockSize) * ENTRY_BYTES);
  for (let at = 0; at < data.length; at += perSlice) {
    out.set(
      blockEntries(data.subarray(at, at + perSlice), blockSize),
      (at / blockSize) * ENTRY_BYTES,
    );
    await yieldToEventLoop();
  }
  return out;
}

async function sendBlocks(
  state: SourceState,
  cut: Cut,
  destination: Destination,
  toSend: Bitmap,
  report: SendReport,
  hooks: SendOptions,
): Promise<void> {
  const { blockSize } = state.identity;
  const perRead = Math.max(1, Math.floor(SEND_READ_BYTES / blockSize));
  using unflushed = new Bitmap(toSend.size);
  let unflushedBytes = 0;
  // With a destination that allows it, one flush stays in flight while sending goes on.
  let inFlight: Promise<void> = Promise.resolve();
  const flush = async () => {
    const covered = unflushed.clone();
    unflushed.clearRange(0, unflushed.size);
    unflushedBytes = 0;
    await inFlight;
    inFlight = destination.flush().then(() => state.recordAcked(covered)).finally(() =>
      covered.free()
    );
    // Awaited before the next flush or at the end; when sending fails first (link down), the
    // error is reported from there, so this one must not count as unhandled meanwhile.
    inFlight.catch(() => {});
    if (!destination.concurrentFlush) await inFlight;
    await hooks.afterFlush?.();
  };
  // Cold blocks first, then the hot ones.
  using hot = toSend.clone();
  if (hooks.hot && hooks.hot.size === toSend.size) hot.and(hooks.hot);
  else hot.clearRange(0, hot.size);
  using cold = toSend.clone().andNot(hot);
  for (const [start, length] of [...cold.extents(), ...hot.extents()]) {
    for (let first = start; first < start + length; first += perRead) {
      const count = Math.min(perRead, start + length - first);
      const data = await cut.read(first, count);
      const entries = await entriesYielding(data, blockSize);
      await state.manifest.write(first, entries);
      await state.manifest.sync();
      const blocks: StagedBlock[] = [];
      for (let i = 0; i < count; i++) {
        const entry = entries.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
        if (isZeroEntry(entry)) {
          blocks.push({ block: first + i, data: null });
          report.zeroBlocks++;
        } else {
          const bytes = data.subarray(i * blockSize, (i + 1) * blockSize);
          blocks.push({ block: first + i, data: bytes, hash: entry });
          report.bytesSent += bytes.length;
        }
      }
      const result = await destination.stage(blocks);
      if (result.rejected.length > 0) {
        throw new PresyncError(
          ErrorCode.BLOCK_HASH_MISMATCH,
          `destination rejected ${result.rejected.length} blocks (first: ${result.rejected[0]}) ` +
            `as not matching their hashes`,
          { retryable: true },
        );
      }
      report.sent.setRange(first, count);
      unflushed.setRange(first, count);
      unflushedBytes += data.length;
      if (unflushedBytes >= FLUSH_EVERY_BYTES) await flush();
    }
  }
  await flush();
  await inFlight;
}
