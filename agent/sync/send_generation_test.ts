import assert from "node:assert/strict";
import { Prng } from "../../fixtures/prng.ts";
import { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { SourceState } from "../source/source_state.ts";
import type { Cut } from "../tracker.ts";
import { blockCount, newVolumeIdentity, type VolumeIdentity } from "../volume/volume_identity.ts";
import { type Destination, MAX_DIGEST_BLOCKS, type StagedBlock } from "./destination.ts";
import {
  DIGEST_GROUPS_AHEAD,
  FIRST_GROUP_BLOCKS,
  FLUSH_EVERY_BYTES,
  sendGeneration,
} from "./send_generation.ts";
import { PAGE_DIGEST_BYTES } from "../volume/page_masks.ts";

const MiB = 1024 * 1024;
const ROOT = "00".repeat(32);

/**
 * A destination that logs every block staged and every flush asked for, and reports the
 * largest number of block bytes that could have been lost at any moment: with at most one
 * flush in flight, everything before the flush preceding the last one is acknowledged.
 */
function countingDestination(identity: VolumeIdentity, concurrentFlush: boolean) {
  const flushedAt: number[] = []; // staged byte count at each flush call
  let staged = 0;
  let worst = 0;
  const destination: Destination = {
    concurrentFlush,
    resumeInfo: () => ({
      identity,
      committedGeneration: 0,
      merkleRoot: ROOT,
      cutTimeMs: 0,
      staged: null,
    }),
    beginGeneration: () => Promise.resolve(),
    stage(blocks: StagedBlock[]) {
      for (const b of blocks) {
        staged += b.data?.length ?? 0;
        // Acknowledged for sure: up to the flush before the last one (concurrent), or up to
        // the last one (each flush awaited).
        const acked = flushedAt.at(concurrentFlush ? -2 : -1) ?? 0;
        worst = Math.max(worst, staged - acked);
      }
      return Promise.resolve({ staged: blocks.length, duplicates: 0, rejected: [] });
    },
    flush() {
      flushedAt.push(staged);
      return Promise.resolve();
    },
    commit: (committedGeneration) =>
      Promise.resolve({ committedGeneration, merkleRoot: ROOT, cutTimeMs: 0 }),
  };
  return { destination, worst: () => worst, flushes: () => flushedAt.length };
}

async function sendWith(blockSize: number, sizeBytes: number, concurrentFlush: boolean) {
  const root = await Deno.makeTempDir({ prefix: "presync-send-" });
  try {
    const identity = newVolumeIdentity("vm", sizeBytes, blockSize);
    const image = new Prng(blockSize).fill(new Uint8Array(sizeBytes));
    const state = await SourceState.init(new DenoFileSystem(), `${root}/state`, identity);
    try {
      const dirty = new Bitmap(blockCount(identity)).setRange(0, blockCount(identity));
      const cut: Cut = {
        dirty,
        pointInTime: true,
        read: (first, count) =>
          Promise.resolve(image.slice(first * blockSize, (first + count) * blockSize)),
        release: () => Promise.resolve(dirty.free()),
      };
      await state.recordCut(dirty, 0);
      const d = countingDestination(identity, concurrentFlush);
      const report = await sendGeneration(state, cut, d.destination);
      report.sent.free();
      await cut.release();
      return { worst: d.worst(), flushes: d.flushes() };
    } finally {
      state.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("send: with a flush in flight, never more than FLUSH_EVERY_BYTES is unacknowledged", async () => {
  // Block sizes that divide the flush interval, the largest allowed, and a short last block.
  for (
    const [blockSize, size] of [[65536, 40 * MiB + 12345], [4 * MiB, 41 * MiB], [4096, 20 * MiB]]
  ) {
    const { worst, flushes } = await sendWith(blockSize, size, true);
    assert.ok(worst <= FLUSH_EVERY_BYTES, `${blockSize}-byte blocks: ${worst} bytes at risk`);
    assert.ok(worst > FLUSH_EVERY_BYTES / 2, "flushes are not more frequent than they need be");
    assert.ok(flushes >= Math.ceil(size / (FLUSH_EVERY_BYTES / 2)));
  }
});

Deno.test("send: a destination that awaits each flush gets one every FLUSH_EVERY_BYTES", async () => {
  const { worst, flushes } = await sendWith(65536, 40 * MiB, false);
  assert.equal(worst, FLUSH_EVERY_BYTES);
  assert.equal(flushes, 3);
});

/**
 * Sends one generation of `blocks` dirty 64 KiB blocks (every other one, so that each read
 * is one block) from an image of seeded bytes, as generation 2 (the replica holds generation
 * 1, so blocks may travel as patches), through the destination `makeDestination` builds;
 * `cutRead` wraps the cut's reads.
 */
async function sendScattered(
  blocks: number,
  makeDestination: (identity: VolumeIdentity) => Destination,
  options: {
    cutRead?: (read: Cut["read"]) => Cut["read"];
    pageMask?: (block: number) => number | undefined;
    stop?: () => boolean;
    behindCommit?: (merkleRoot: string) => void;
    hot?: (blocks: number) => Bitmap;
  } = {},
) {
  const root = await Deno.makeTempDir({ prefix: "presync-send-" });
  try {
    const blockSize = 65536;
    const identity = newVolumeIdentity("vm", 2 * blocks * blockSize, blockSize);
    const image = new Prng(blocks).fill(new Uint8Array(identity.sizeBytes));
    const state = await SourceState.init(new DenoFileSystem(), `${root}/state`, identity);
    try {
      const dirty = new Bitmap(blockCount(identity));
      for (let b = 0; b < blockCount(identity); b += 2) dirty.set(b);
      const read: Cut["read"] = (first, count) =>
        Promise.resolve(image.slice(first * blockSize, (first + count) * blockSize));
      const cut: Cut = {
        dirty,
        pointInTime: true,
        ...(options.pageMask ? { pageMask: options.pageMask } : {}),
        read: options.cutRead ? options.cutRead(read) : read,
        release: () => Promise.resolve(dirty.free()),
      };
      // Generation 1 (nothing) is committed: the replica has a copy to patch.
      using none = new Bitmap(blockCount(identity));
      await state.recordCut(none, 0);
      await state.recordCommitted(1);
      await state.recordCut(dirty, 0);
      const made = makeDestination(identity);
      const destination: Destination = {
        ...made,
        resumeInfo: async () => ({ ...(await made.resumeInfo()), committedGeneration: 1 }),
      };
      using hot = options.hot?.(blockCount(identity));
      const report = await sendGeneration(state, cut, destination, {
        ...(options.stop ? { stop: options.stop } : {}),
        ...(options.behindCommit ? { behindCommit: options.behindCommit } : {}),
        ...(hot ? { hot } : {}),
      });
      report.sent.free();
      await cut.release();
      return report;
    } finally {
      state.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("send: acknowledgement points are spaced by what blocks cost to send (a patch: its pages)", async () => {
  // One changed page per block: 4 KiB each to resend, not 64 KiB.
  const patchCost = 4096 + 64;
  let staged = 0;
  let worst = 0;
  const flushedAt: number[] = [];
  const blocks = 3000;
  await sendScattered(blocks, (identity) => {
    const d = countingDestination(identity, true).destination;
    return {
      ...d,
      sendBytes: (b: StagedBlock) => b.pages === undefined ? b.data?.length ?? 0 : patchCost,
      stage(items: StagedBlock[]) {
        for (const b of items) {
          staged += b.pages === undefined ? b.data?.length ?? 0 : patchCost;
          worst = Math.max(worst, staged - (flushedAt.at(-2) ?? 0));
        }
        return Promise.resolve({ staged: items.length, duplicates: 0, rejected: [] });
      },
      flush() {
        flushedAt.push(staged);
        return Promise.resolve();
      },
    };
  }, { pageMask: () => 1 });
  assert.ok(worst <= FLUSH_EVERY_BYTES, `${worst} bytes at risk`);
  // 3000 × ~4 KiB = ~12 MiB of patches: a flush or two at the half interval and the last one,
  // where counting whole blocks (187 MiB) would have asked for 24.
  assert.ok(flushedAt.length <= 3, `${flushedAt.length} flushes for ${staged} bytes of patches`);
});

Deno.test("send: page digests are asked for up to DIGEST_GROUPS_AHEAD groups before they are needed", async () => {
  const blocks = (DIGEST_GROUPS_AHEAD + 4) * MAX_DIGEST_BLOCKS;
  const asked: { blocks: number[]; answer: () => void }[] = [];
  let outstandingAtFirstAnswer = -1;
  let stagedBeforeFirstAnswer = 0;
  await sendScattered(blocks, (identity) => {
    const d = countingDestination(identity, true).destination;
    return {
      ...d,
      stage(items: StagedBlock[]) {
        if (outstandingAtFirstAnswer < 0) stagedBeforeFirstAnswer += items.length;
        return d.stage(items);
      },
      pageDigests(names: number[]) {
        return new Promise<Uint8Array | null>((resolve) => {
          const answer = () => resolve(new Uint8Array(names.length * 16 * PAGE_DIGEST_BYTES));
          asked.push({ blocks: names, answer });
          // The first question is answered once the sender has asked all it may ahead of it
          // (it must not wait for the first answer to ask the next), the rest at once.
          if (asked.length === 1) {
            setTimeout(() => {
              outstandingAtFirstAnswer = asked.length;
              answer();
            }, 50);
          } else answer();
        });
      },
    };
  });
  assert.equal(stagedBeforeFirstAnswer, 0, "nothing is staged before its digests came");
  assert.equal(outstandingAtFirstAnswer, DIGEST_GROUPS_AHEAD);
  // Groups of 8, 16, 32, 64 blocks, then of MAX_DIGEST_BLOCKS, the last one what is left.
  const sizes: number[] = [];
  for (let left = blocks, size = FIRST_GROUP_BLOCKS; left > 0; size *= 2) {
    sizes.push(Math.min(left, size, MAX_DIGEST_BLOCKS));
    left -= sizes.at(-1)!;
  }
  assert.deepEqual(asked.map((a) => a.blocks.length), sizes);
  assert.deepEqual(asked.flatMap((a) => a.blocks), Array.from({ length: blocks }, (_, i) => 2 * i));
});

Deno.test("send: a group's reads are issued together, the next group's before this one is staged, and none outlives a stop", async () => {
  let inFlight = 0;
  let most = 0;
  let readsIssued = 0;
  let readsBeforeFirstStage = -1;
  let stagedBlocks = 0;
  // One read per block: groups of 8, 16, 32, 64 reads, then 128, 128, 128 and 96.
  const blocks = 600;
  const report = await sendScattered(blocks, (identity) => {
    const d = countingDestination(identity, true).destination;
    return {
      ...d,
      stage(items: StagedBlock[]) {
        if (readsBeforeFirstStage < 0) readsBeforeFirstStage = readsIssued;
        stagedBlocks += items.length;
        return d.stage(items);
      },
    };
  }, {
    cutRead: (read) => async (first, count) => {
      readsIssued++;
      most = Math.max(most, ++inFlight);
      await new Promise((resolve) => setTimeout(resolve, 1));
      inFlight--;
      return read(first, count);
    },
    stop: () => stagedBlocks >= 200,
  });
  assert.equal(most, 128, "the 128 reads of a group are in flight together");
  assert.equal(
    readsBeforeFirstStage,
    3 * FIRST_GROUP_BLOCKS,
    "the first group is small and the second is read before the first is staged",
  );
  assert.ok(report.stopped);
  assert.equal(inFlight, 0, "no read of a group prepared ahead is left running after a stop");
});

Deno.test("send: an ordered destination gets the commit behind the last flush; a patch it names to resend is sent whole and the commit asked again", async () => {
  const events: string[] = [];
  let answerFlush: (() => void) | null = null;
  let resent = false;
  const report = await sendScattered(4, (identity) => {
    const d = countingDestination(identity, true).destination;
    return {
      ...d,
      beginGeneration: () => {
        events.push("begin");
        return Promise.resolve();
      },
      stage(items: StagedBlock[]) {
        for (const b of items) {
          events.push(`stage ${b.block}${b.pages === undefined ? "" : " patch"}`);
          if (b.block === 2 && b.pages === undefined) resent = true;
        }
        return d.stage(items);
      },
      flush() {
        const first = !events.includes("flush");
        events.push("flush");
        // The first (last of the blocks) is answered only after the commit was asked for.
        if (!first) return Promise.resolve({ resend: [] });
        return new Promise((resolve) => answerFlush = () => resolve({ resend: [2] }));
      },
      commit(generation: number) {
        events.push("commit");
        answerFlush?.();
        answerFlush = null;
        if (!resent) {
          return Promise.reject(
            new PresyncError(ErrorCode.GENERATION_MISMATCH, "1 of 4 blocks not yet staged"),
          );
        }
        return Promise.resolve({ committedGeneration: generation, merkleRoot: ROOT, cutTimeMs: 0 });
      },
    };
  }, { pageMask: () => 1 });
  assert.deepEqual(events, [
    "begin",
    "stage 0 patch",
    "stage 2 patch",
    "stage 4 patch",
    "stage 6 patch",
    "flush",
    "commit",
    "stage 2",
    "flush",
    "commit",
  ]);
  assert.equal(report.resentWhole, 1);
});

Deno.test("send: a commit refused for another reason than the resends is not retried", async () => {
  await assert.rejects(
    sendScattered(2, (identity) => {
      const d = countingDestination(identity, true).destination;
      return {
        ...d,
        commit: () =>
          Promise.reject(new PresyncError(ErrorCode.VERIFY_MISMATCH, "would have root x")),
      };
    }),
    (err: unknown) => err instanceof PresyncError && err.code === ErrorCode.VERIFY_MISMATCH,
  );
});

Deno.test("send: with an ordered destination blocks follow the begin at once; a refused begin is the error reported", async () => {
  let staged = 0;
  await assert.rejects(
    sendScattered(3, (identity) => {
      const d = countingDestination(identity, true).destination;
      return {
        ...d,
        beginGeneration: () =>
          new Promise((_, reject) =>
            setTimeout(
              () => reject(new PresyncError(ErrorCode.GENERATION_MISMATCH, "begin refused")),
              20,
            )
          ),
        stage(items: StagedBlock[]) {
          staged += items.length;
          // What a destination does with blocks of a generation it did not begin.
          return Promise.reject(new PresyncError(ErrorCode.CONNECTION_LOST, "stream ended"));
        },
      };
    }),
    (err: unknown) => err instanceof PresyncError && /begin refused/.test(err.message),
  );
  assert.ok(staged > 0, "blocks went out before the begin was answered");
});

Deno.test("send: behindCommit is called once the commit is asked for, before it is answered, with its root", async () => {
  const events: string[] = [];
  let expected = "";
  await sendScattered(2, (identity) => {
    const d = countingDestination(identity, true).destination;
    return {
      ...d,
      commit(generation: number, root: string) {
        events.push("commit asked");
        expected = root;
        return new Promise((resolve) =>
          setTimeout(() => {
            events.push("commit answered");
            resolve({ committedGeneration: generation, merkleRoot: root, cutTimeMs: 0 });
          }, 10)
        );
      },
    };
  }, {
    behindCommit: (root) => {
      events.push("behind");
      assert.equal(root, expected);
    },
  });
  assert.deepEqual(events, ["commit asked", "behind", "commit answered"]);
});

Deno.test("send: the blocks outside the last generation's set go first, then the hot ones", async () => {
  const blocks = 40; // the dirty blocks are 0, 2, …, 78
  const hotBlocks = [4, 6, 30, 31, 32, 70, 78, 79];
  const order: number[] = [];
  await sendScattered(blocks, (identity) => countingDestination(identity, true).destination, {
    cutRead: (read) => (first, count) => {
      for (let i = 0; i < count; i++) order.push(first + i);
      return read(first, count);
    },
    hot: (size) => {
      const hot = new Bitmap(size);
      for (const b of hotBlocks) hot.set(b);
      return hot;
    },
  });
  const dirty = Array.from({ length: blocks }, (_, i) => 2 * i);
  const hotDirty = dirty.filter((b) => hotBlocks.includes(b));
  assert.deepEqual(order, [...dirty.filter((b) => !hotBlocks.includes(b)), ...hotDirty]);
});

Deno.test("the source state refuses an acknowledgement of blocks outside the pending generation", async () => {
  const root = await Deno.makeTempDir({ prefix: "presync-acked-" });
  try {
    const identity = newVolumeIdentity("vm", 16 * 65536, 65536);
    const state = await SourceState.init(new DenoFileSystem(), `${root}/state`, identity);
    using dirty = new Bitmap(16).setRange(2, 4);
    await state.recordCut(dirty, 0);
    await state.recordAcked([[3, 2]]);
    await assert.rejects(
      state.recordAcked([[2, 1], [5, 2]]),
      (err) =>
        err instanceof PresyncError && err.code === ErrorCode.INVALID_ARGUMENT &&
        /blocks 5–6 acknowledged for generation 1 of vm are not all blocks of that generation/
          .test(err.message),
    );
    assert.equal(state.pending?.acked.popcount(), 2, "the refused set left the record as it was");
    const reopened = await SourceState.open(new DenoFileSystem(), `${root}/state`);
    assert.equal(reopened.pending?.acked.popcount(), 2);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("send: its waits say whether the source or the link held it back", async () => {
  const blockSize = 65536;
  const identity = newVolumeIdentity("vm", 64 * blockSize, blockSize);
  const image = new Prng(7).fill(new Uint8Array(64 * blockSize));
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const sendOnce = async (readDelayMs: number, stageDelayMs: number) => {
    const root = await Deno.makeTempDir({ prefix: "presync-waits-" });
    try {
      const state = await SourceState.init(new DenoFileSystem(), `${root}/state`, identity);
      const dirty = new Bitmap(64).setRange(0, 64);
      const cut: Cut = {
        dirty,
        pointInTime: true,
        read: async (first, count) => {
          await sleep(readDelayMs);
          return image.slice(first * blockSize, (first + count) * blockSize);
        },
        release: () => Promise.resolve(dirty.free()),
      };
      await state.recordCut(dirty, 0);
      const { destination } = countingDestination(identity, true);
      let stages = 0;
      const stage = destination.stage.bind(destination);
      destination.stage = async (blocks) => {
        stages++;
        await sleep(stageDelayMs);
        return await stage(blocks);
      };
      const report = await sendGeneration(state, cut, destination);
      report.sent.free();
      await cut.release();
      return { waits: report.waits, stages };
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  };
  // 64 blocks in groups of 8, 16, 32 and 8: four reads.
  const slowSource = await sendOnce(40, 0);
  assert.ok(slowSource.waits.sourceMs >= 40, JSON.stringify(slowSource.waits));
  assert.ok(slowSource.waits.sourceMs > slowSource.waits.linkMs, JSON.stringify(slowSource.waits));
  const slowLink = await sendOnce(0, 40);
  assert.ok(slowLink.waits.linkMs >= 40 * slowLink.stages, JSON.stringify(slowLink));
  assert.ok(slowLink.waits.linkMs > slowLink.waits.sourceMs, JSON.stringify(slowLink.waits));
  assert.equal(slowLink.waits.digestsMs, 0, "no committed generation: no page digests asked");
});
