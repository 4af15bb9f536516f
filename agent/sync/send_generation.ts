import { Bitmap, type Extent } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { SourceState } from "../source/source_state.ts";
import { toHex } from "../hex.ts";
import type { Cut } from "../tracker.ts";
import { blockEntries, ENTRY_BYTES, isZeroEntry } from "../volume/block_hashes.ts";
import { assertSameVolume, blockLength } from "../volume/volume_identity.ts";
import {
  differingPages,
  maskPages,
  PAGE_DIGEST_BYTES,
  pageMasksSupported,
  pagesIn,
} from "../volume/page_masks.ts";
import {
  type Destination,
  MAX_DIGEST_BLOCKS,
  type ResumeInfo,
  type StagedBlock,
} from "./destination.ts";
import { assertResumable } from "./resume_check.ts";
import { YIELD_EVERY_BYTES, yieldToEventLoop } from "../yield.ts";

/** Most bytes read from the source in one go while sending. */
export const SEND_READ_BYTES = 8 * 1024 * 1024;
/**
 * Most bytes (before compression, as `Destination.sendBytes` counts them: a patch costs its
 * changed pages, not its block) sent and not yet acknowledged by a flush: what a
 * destination crash can cost in resent data at most. The destination keeps what its last
 * flush made durable (its resume state says so), so only blocks sent after the last
 * acknowledged flush can be lost. With a destination that takes blocks while a flush is in
 * flight (the network), a flush goes out every half of this, so the flush in flight and the
 * blocks sent behind it stay within it; otherwise every flush is awaited and one comes every
 * `FLUSH_EVERY_BYTES`. Half of it per round trip also bounds how fast one volume can go on a
 * long link (8 MiB per RTT), which is above what the session's 4 MiB window allows anyway.
 */
export const FLUSH_EVERY_BYTES = 16 * 1024 * 1024;
/**
 * Groups of blocks whose page digests are asked for ahead of the group being sent: a
 * destination answers in order, behind the blocks sent before the question, so each answer
 * must be asked for about one round trip before it is needed. Sixteen groups (2048 blocks,
 * 512 KiB of digests at most) cover a 250 ms round trip at a few thousand blocks per second.
 */
export const DIGEST_GROUPS_AHEAD = 16;

/**
 * Blocks in the first group a generation prepares (reads, hashes and syncs into the manifest)
 * before its first block is sent; the groups after it double up to `SEND_READ_BYTES`.
 */
export const FIRST_GROUP_BLOCKS = 8;

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
  /** The generation is an evacuation's last: its `begin` says so (see `BeginOptions`). */
  final?: boolean;
  /** Called just before the commit is asked for. */
  onCommit?: () => void;
  /**
   * Called right after the commit is asked for, with the Merkle root it expects: a request
   * made then of a destination that answers in order (`concurrentFlush`) is answered once
   * the commit is (an evacuation's check of the replica, without a round trip of its own).
   * Called again when the commit is asked again.
   */
  behindCommit?: (merkleRoot: string) => void;
  /**
   * Asked before each block: true stops sending there (what was staged is flushed, nothing
   * is committed, the report says `stopped`), so that the generation can be folded.
   */
  stop?: () => boolean;
  /**
   * The destination's state as a stopped send left it on this link (`SendReport.stoppedAt`):
   * the send resumes from it without asking the destination (a round trip less). Only for
   * the send right after the stop, on the same session, with nothing begun in between.
   * Owned by the send.
   */
  resumeFrom?: ResumeInfo;
}

/**
 * Where a send waited, ms: for the source (reads, hashes and the manifest's sync of a group
 * not ready when the link could take it), for the link (the destination's `stage`: encoding
 * and compressing the blocks, pacing, the session's window full), for the destination's page
 * digests, and for acknowledgements (a flush still in flight when the next was due, and the
 * last one unless the commit went behind it: then it is the commit's). What a send did not
 * wait for ran alongside the sending.
 */
export interface SendWaits {
  sourceMs: number;
  linkMs: number;
  digestsMs: number;
  flushMs: number;
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
  /** 4 KiB pages sent with data: a patch's changed pages, every page of a block sent whole. */
  pagesSent: number;
  /** Blocks staged with their changed pages (a destination may send only those). */
  pagedBlocks: number;
  /** Of those, blocks the destination could not rebuild, sent again whole. */
  resentWhole: number;
  /** Blocks of the generation the destination already had durably staged. */
  alreadyStaged: number;
  /** Merkle root of the committed generation (hex). */
  merkleRoot: string;
  /** How long the destination took to commit, ms (0 when it had committed already). */
  commitMs: number;
  /** Whether `stop` stopped the send: the generation is not committed. */
  stopped: boolean;
  /**
   * When stopped: the destination's state it left, its staged blocks being those
   * acknowledged (a subset of what it holds: a block sent again is harmless), for
   * `SendOptions.resumeFrom`. The caller owns (and frees) `staged.received`.
   */
  stoppedAt: ResumeInfo | null;
  /** Where the send waited (the commit not included: see `commitMs`). */
  waits: SendWaits;
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
  const info = hooks.resumeFrom ?? await destination.resumeInfo();
  const report: SendReport = {
    generation,
    sent: new Bitmap(pending.dirty.size),
    bytesSent: 0,
    zeroBlocks: 0,
    pagesSent: 0,
    pagedBlocks: 0,
    resentWhole: 0,
    alreadyStaged: 0,
    merkleRoot: "",
    commitMs: 0,
    stopped: false,
    stoppedAt: null,
    waits: { sourceMs: 0, linkMs: 0, digestsMs: 0, flushMs: 0 },
  };
  try {
    assertSameVolume(info.identity, state.identity);
    assertResumable(state, info.committedGeneration);
    if (info.committedGeneration === generation) {
      // Committed before the acknowledgement reached us: only the bookkeeping is left.
      report.merkleRoot = info.merkleRoot;
      await state.recordCommitted(generation);
      return report;
    }
    // A destination that answers in order takes blocks right behind the begin: its answer is
    // awaited at the first acknowledgement point, not before the first block (a round trip
    // less); blocks it refuses for want of a begin are sent again on the next attempt.
    const begun = destination.beginGeneration(generation, pending.dirty, pending.cutTimeMs, {
      final: hooks.final === true,
      ...(pending.fold ? { fold: pending.fold } : {}),
    });
    if (destination.concurrentFlush) begun.catch(() => {});
    else await begun;
    // What to send: the generation's blocks (read only, not copied: 2 MiB at 1 TiB), less
    // those the destination staged already when this resumes a send.
    let toSend = pending.dirty;
    using resumed = info.staged?.generation === generation ? pending.dirty.clone() : null;
    if (resumed && info.staged) {
      report.alreadyStaged = info.staged.received.countAnd(pending.dirty);
      // A fold (see `BeginOptions.fold`) took its blocks out of what was staged when the
      // destination had not folded yet; after it had, those of them staged since are sent
      // again and ignored as duplicates.
      if (pending.fold) {
        using kept = info.staged.received.clone().andNot(pending.fold);
        resumed.andNot(kept);
      } else resumed.andNot(info.staged.received);
      toSend = resumed;
    }
    const commit = async () => {
      report.merkleRoot = toHex(await state.manifest.root());
      hooks.onCommit?.();
      const commitStarted = performance.now();
      const committing = destination.commit(generation, report.merkleRoot);
      hooks.behindCommit?.(report.merkleRoot);
      await committing;
      report.commitMs = performance.now() - commitStarted;
    };
    // A replica with no committed generation holds zeros (or a seed in progress): its page
    // digests are not worth a round trip, so its blocks go whole.
    const patchable = info.committedGeneration > 0;
    try {
      await sendBlocks(state, cut, destination, toSend, report, hooks, {
        begun,
        commit,
        patchable,
      });
    } catch (err) {
      await begun; // a refused begin explains what failed after it
      throw err;
    }
    if (report.stopped) {
      // Acknowledged now, and what the destination said it held when this send resumed (its
      // acknowledgements may have been lost with a link cut).
      const received = pending.acked.clone();
      if (info.staged?.generation === generation) received.or(info.staged.received);
      report.stoppedAt = { ...info, staged: { generation, received } };
      return report;
    }
    await state.recordCommitted(generation);
    return report;
  } catch (err) {
    report.sent.free();
    throw err;
  } finally {
    info.staged?.received.free();
  }
}

/** Awaits `promise`, adding the time it took to `waits[part]`. */
async function waited<T>(waits: SendWaits, part: keyof SendWaits, promise: Promise<T>): Promise<T> {
  const since = performance.now();
  try {
    return await promise;
  } finally {
    waits[part] += performance.now() - since;
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

/**
 * Sends the blocks of `toSend` with acknowledgement points, then, unless `hooks.stop`
 * stopped it, has the generation committed by `commit`. `begun` is the generation's begin,
 * answered before the first acknowledgement point; without `patchable` (a replica with no
 * committed generation) no page digests are asked for and every block goes whole.
 */
async function sendBlocks(
  state: SourceState,
  cut: Cut,
  destination: Destination,
  toSend: Bitmap,
  report: SendReport,
  hooks: SendOptions,
  { begun, commit, patchable }: {
    begun: Promise<void>;
    commit: () => Promise<void>;
    patchable: boolean;
  },
): Promise<void> {
  const { identity } = state;
  const { blockSize } = identity;
  const perRead = Math.max(1, Math.floor(SEND_READ_BYTES / blockSize));
  // The unacknowledged bytes are at most the flush in flight plus what was sent behind it.
  const flushEveryBytes = destination.concurrentFlush ? FLUSH_EVERY_BYTES / 2 : FLUSH_EVERY_BYTES;
  // Runs of blocks staged since the last flush, not a whole-volume set: a flush covers at most
  // FLUSH_EVERY_BYTES of sending cost, so a few thousand runs of data blocks; zero markers cost
  // almost nothing, but they come in runs (holes, discards).
  let unflushed: Extent[] = [];
  let unflushedBytes = 0;
  // Patched blocks the destination could not rebuild over its copy: sent again whole, as
  // soon as a flush reply names them (no round trip is awaited for them).
  const resend: number[] = [];
  // With a destination that allows it, one flush stays in flight while sending goes on.
  let inFlight: Promise<void> = Promise.resolve();
  const flush = async () => {
    await begun;
    const covered = unflushed;
    unflushed = [];
    unflushedBytes = 0;
    await waited(report.waits, "flushMs", inFlight);
    inFlight = destination.flush().then(async (result) => {
      const resent = new Set(result?.resend ?? []);
      for (const block of resent) resend.push(block);
      await state.recordAcked(resent.size > 0 ? withoutBlocks(covered, resent) : covered);
    });
    // Awaited before the next flush or at the end; when sending fails first (link down), the
    // error is reported from there, so this one must not count as unhandled meanwhile.
    inFlight.catch(() => {});
    if (!destination.concurrentFlush) await waited(report.waits, "flushMs", inFlight);
    await hooks.afterFlush?.();
  };
  /** Stages `blocks` (consecutive, from `first`, costing `bytes` to send) as unflushed. */
  const stage = async (first: number, blocks: StagedBlock[], bytes: number) => {
    if (blocks.length === 0) return;
    const result = await waited(report.waits, "linkMs", destination.stage(blocks));
    if (result.rejected.length > 0) {
      throw new PresyncError(
        ErrorCode.BLOCK_HASH_MISMATCH,
        `destination rejected ${result.rejected.length} blocks (first: ${result.rejected[0]}) ` +
          `as not matching their hashes`,
        { retryable: true },
      );
    }
    report.sent.setRange(first, blocks.length);
    const last = unflushed.at(-1);
    if (last && last[0] + last[1] === first) last[1] += blocks.length;
    else unflushed.push([first, blocks.length]);
    unflushedBytes += bytes;
  };
  /** Stages the blocks of `resend` whole, each read again from the cut. */
  const sendResends = async () => {
    for (const block of resend.splice(0).sort((a, b) => a - b)) {
      const data = await cut.read(block, 1);
      const entry = blockEntries(data, blockSize);
      await state.manifest.write(block, entry);
      await state.manifest.sync();
      report.resentWhole++;
      report.bytesSent += data.length;
      report.pagesSent += pagesIn(data.length);
      await stage(block, [{ block, data, hash: entry }], data.length);
    }
  };
  // Reads of at most `perRead` blocks; scattered small ones are grouped so that one manifest
  // sync covers the whole group (a sync per single-block extent would dominate the send).
  // A cut that knows no pages (a tracker of whole blocks, or one resumed after a restart or a
  // link cut, whose masks are gone): the destination's page digests tell which pages
  // changed. They are asked for up to DIGEST_GROUPS_AHEAD groups ahead, so each answer comes
  // while the groups before it are being sent (no round trip per group).
  const digestsWanted = patchable && (cut.pageMask === undefined || !cut.pointInTime) &&
    destination.pageDigests !== undefined && pageMasksSupported(blockSize);
  const perGroup = digestsWanted ? Math.min(perRead, MAX_DIGEST_BLOCKS) : perRead;
  // The first group is prepared before anything is sent, so the groups start small and
  // double up to `perGroup`: the link starts after a few blocks instead of a whole group,
  // and each later group is prepared while the smaller one before it is sent.
  const groups: [number, number][][] = [];
  let cap = Math.min(FIRST_GROUP_BLOCKS, perGroup);
  let group: [number, number][] = [];
  let inGroup = 0;
  for (const [start, length] of coldThenHot(toSend, hooks.hot)) {
    for (let first = start; first < start + length;) {
      const count = Math.min(cap - inGroup, start + length - first);
      group.push([first, count]);
      inGroup += count;
      first += count;
      if (inGroup === cap) {
        groups.push(group);
        [group, inGroup, cap] = [[], 0, Math.min(cap * 2, perGroup)];
      }
    }
  }
  if (group.length > 0) groups.push(group);
  const digestsOf = (g: number): Promise<Uint8Array | null> => {
    if (!digestsWanted || g >= groups.length) return Promise.resolve(null);
    const blocks = groups[g].flatMap(([first, count]) =>
      Array.from({ length: count }, (_, i) => first + i)
    );
    const asked = destination.pageDigests!(blocks);
    asked.catch(() => {}); // awaited when its group comes; a failure is reported there
    return asked;
  };
  const asked: Promise<Uint8Array | null>[] = [];
  for (let g = 0; g < DIGEST_GROUPS_AHEAD; g++) asked.push(digestsOf(g));
  // A group is prepared (read, hashed, its manifest entries written and synced) while the
  // one before it is sent, so neither the reads nor the manifest's sync wait for the link.
  // Its reads are issued together: a tracker that reads on another thread, or a file read in
  // the thread pool, answers them back to back instead of one round trip each.
  type Prepared = { first: number; count: number; data: Uint8Array; entries: Uint8Array }[];
  const prepare = async (g: number): Promise<Prepared> => {
    const read = await Promise.all(groups[g].map(([first, count]) => cut.read(first, count)));
    const group: Prepared = [];
    for (const [index, [first, count]] of groups[g].entries()) {
      const entries = await entriesYielding(read[index], blockSize);
      await state.manifest.write(first, entries);
      group.push({ first, count, data: read[index], entries });
    }
    await state.manifest.sync();
    return group;
  };
  const prepareFrom = (g: number): Promise<Prepared> | null => {
    if (g >= groups.length) return null;
    const preparing = prepare(g);
    preparing.catch(() => {}); // awaited when its group comes; a failure is reported there
    return preparing;
  };
  let next = prepareFrom(0);
  try {
    groups: for (let g = 0; g < groups.length; g++) {
      const digests = digestsWanted
        ? await waited(report.waits, "digestsMs", asked.shift()!)
        : await asked.shift()!;
      asked.push(digestsOf(g + DIGEST_GROUPS_AHEAD));
      if (resend.length > 0) await sendResends();
      const group = await waited(report.waits, "sourceMs", next!);
      next = prepareFrom(g + 1);
      let digestAt = 0;
      for (const { first, count, data, entries } of group) {
        // Staged in pieces that end where a flush is due, so no flush covers more than its share.
        let piece: StagedBlock[] = [];
        let pieceFirst = first;
        let pieceBytes = 0;
        for (let i = 0; i < count; i++) {
          if (hooks.stop?.()) {
            await stage(pieceFirst, piece, pieceBytes);
            report.stopped = true;
            break groups;
          }
          const length = blockLength(identity, first + i);
          const entry = entries.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
          let item: StagedBlock;
          if (isZeroEntry(entry)) {
            item = { block: first + i, data: null };
          } else {
            const bytes = data.subarray(i * blockSize, i * blockSize + length);
            const theirs = digests?.subarray(
              digestAt,
              digestAt + pagesIn(length) * PAGE_DIGEST_BYTES,
            );
            const pages = patchable
              ? cut.pageMask?.(first + i) ?? (theirs && differingPages(bytes, theirs))
              : undefined;
            item = { block: first + i, data: bytes, hash: entry, pages };
          }
          digestAt += pagesIn(length) * PAGE_DIGEST_BYTES;
          const cost = destination.sendBytes?.(item) ?? length;
          if (unflushedBytes + pieceBytes + cost > flushEveryBytes) {
            await stage(pieceFirst, piece, pieceBytes);
            await flush();
            [piece, pieceFirst, pieceBytes] = [[], first + i, 0];
          }
          piece.push(item);
          pieceBytes += cost;
          if (item.data === null) report.zeroBlocks++;
          else {
            if (item.pages !== undefined) report.pagedBlocks++;
            report.bytesSent += item.data.length;
            report.pagesSent += maskPages(item.pages, length);
          }
        }
        await stage(pieceFirst, piece, pieceBytes);
        if (unflushedBytes >= flushEveryBytes) await flush();
      }
    }
  } finally {
    // A group prepared ahead of a stop or a failure writes no manifest entry once we return.
    await next?.catch(() => {});
  }
  await flush();
  // Stopped: blocks to resend are not acknowledged, so the next send takes them.
  if (report.stopped) return await inFlight;
  if (destination.concurrentFlush && resend.length === 0) {
    // The commit goes right behind the last flush (a round trip less): the destination
    // answers in order, and while patches that flush names to resend are missing it refuses
    // the commit as incomplete and applies nothing; it is asked again once they are staged.
    const committing = commit();
    committing.catch(() => {});
    await inFlight;
    try {
      return await committing;
    } catch (err) {
      const incomplete = err instanceof PresyncError &&
        err.code === ErrorCode.GENERATION_MISMATCH && resend.length > 0;
      if (!incomplete) throw err;
    }
  } else await waited(report.waits, "flushMs", inFlight);
  while (resend.length > 0) {
    await sendResends();
    await flush();
    await waited(report.waits, "flushMs", inFlight);
  }
  await commit();
}

/** `runs` less the blocks of `drop`. */
function withoutBlocks(runs: Extent[], drop: Set<number>): Extent[] {
  const out: Extent[] = [];
  for (const [start, length] of runs) {
    let from = start;
    for (let block = start; block < start + length; block++) {
      if (!drop.has(block)) continue;
      if (block > from) out.push([from, block - from]);
      from = block + 1;
    }
    if (start + length > from) out.push([from, start + length - from]);
  }
  return out;
}

/**
 * The runs of `toSend`, those outside `hot` first, then those in it. Listed at once, so no
 * copy of the sets stays held while the generation is sent (2 MiB each at 1 TiB).
 */
function coldThenHot(toSend: Bitmap, hot: Bitmap | undefined): Extent[] {
  if (!hot || hot.size !== toSend.size) return [...toSend.extents()];
  using part = toSend.clone().andNot(hot);
  const runs = [...part.extents()];
  part.clearRange(0, part.size).or(toSend).and(hot);
  return [...runs, ...part.extents()];
}
