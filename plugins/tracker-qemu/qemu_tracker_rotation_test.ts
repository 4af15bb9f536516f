import assert from "node:assert/strict";
import type { Cut } from "../../agent/tracker.ts";
import { needQemu } from "../../fixtures/guest/qemu_process.ts";
import { pollUntil } from "../../fixtures/nbd_tools.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { BLOCK, SIZE, TrackerRig } from "./_test_rig.ts";

const qemu = await needQemu(["qemu-img"]);

const CUTS = 5;
const WRITES_BETWEEN_CUTS = 12;
const BLOCKS = SIZE / BLOCK;

/** One guest write: its block, its unique pattern byte, and when it was issued and acknowledged. */
interface Write {
  block: number;
  pattern: number;
  issued: number;
  done: number;
}

/** One cut: when it started and returned, its dirty blocks and the first byte read of each. */
interface CutRecord {
  start: number;
  end: number;
  dirty: Set<number>;
  read: Map<number, number>;
}

Deno.test({
  name: "rotation under concurrent writes: every write is in the generation whose cut " +
    "followed it (or the next, if it raced the cut), and each read is the disk at the cut",
  ...qemu,
  fn: () =>
    withSeed(async (prng) => {
      await using rig = await TrackerRig.start("raw");
      const tracker = await rig.open();
      // One logical clock orders writes and cuts (all events happen on this thread).
      let clock = 0;
      const writes: Write[] = [];
      const cuts: CutRecord[] = [];
      let stop = false;
      // Each block's writes get patterns 1, 2, 3, …: a byte read names the write it came from.
      const count = new Map<number, number>();
      const write = async (block: number) => {
        const pattern = (count.get(block) ?? 0) + 1;
        assert.ok(pattern < 256, "out of patterns");
        count.set(block, pattern);
        const w = { block, pattern, issued: ++clock, done: 0 };
        await rig.write(block, pattern);
        w.done = ++clock;
        writes.push(w);
      };
      // The guest writes all along, so writes race every cut and every read.
      let written = 0;
      const writer = (async () => {
        for (; !stop; written++) await write(prng.int(BLOCKS));
      })();
      try {
        for (let k = 0; k < CUTS; k++) {
          const before = written;
          await pollUntil("writes between cuts", () => written >= before + WRITES_BETWEEN_CUTS);
          const start = ++clock;
          const cut: Cut = await tracker.cut();
          const record: CutRecord = { start, end: ++clock, dirty: new Set(), read: new Map() };
          try {
            // The guest overwrites part of the generation before it is read, and goes on
            // writing while it is read: copy-before-write keeps the cut's view.
            for (const [first] of [...cut.dirty.extents()].slice(0, 3)) await write(first);
            for (const [first, count] of cut.dirty.extents()) {
              const data = await cut.read(first, count);
              for (let i = 0; i < count; i++) {
                const block = data.subarray(i * BLOCK, (i + 1) * BLOCK);
                assert.ok(block.every((b) => b === block[0]), `block ${first + i} is torn`);
                record.dirty.add(first + i);
                record.read.set(first + i, block[0]);
              }
            }
          } finally {
            await cut.release();
          }
          cuts.push(record);
        }
      } finally {
        stop = true;
        await writer;
      }
      for (const w of writes) {
        // The first cut that may have caught the write, and the first that surely follows it.
        const mayCatch = cuts.findIndex((c) => c.end > w.issued);
        const follows = cuts.findIndex((c) => c.start > w.done);
        if (follows < 0) continue; // It raced or followed the last cut: its generation is not cut.
        const allowed = Array.from({ length: follows - mayCatch + 1 }, (_, i) => mayCatch + i);
        assert.ok(
          allowed.some((k) => cuts[k].dirty.has(w.block)),
          `write ${w.pattern} to block ${w.block} is in none of generations ` +
            allowed.map((k) => k + 1).join(", "),
        );
      }
      cuts.forEach((cut, k) => {
        for (const block of cut.dirty) {
          const history = writes.filter((w) => w.block === block);
          const previousStart = k === 0 ? 0 : cuts[k - 1].start;
          assert.ok(
            history.some((w) => w.issued < cut.end && w.done > previousStart),
            `generation ${k + 1} carries block ${block}, which nobody wrote since cut ${k}`,
          );
          // The disk at the cut: the last write acknowledged before it, or one racing it.
          const before = history.filter((w) => w.done < cut.start).at(-1);
          const racing = history.filter((w) => w.issued < cut.end && w.done > cut.start);
          const expected = [before?.pattern ?? 0, ...racing.map((w) => w.pattern)];
          assert.ok(
            expected.includes(cut.read.get(block)!),
            `generation ${k + 1} read block ${block} as pattern ${cut.read.get(block)}, ` +
              `expected one of ${expected}: a write after the cut shows through`,
          );
        }
      });
    }),
});
