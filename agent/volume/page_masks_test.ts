import assert from "node:assert/strict";
import { Bitmap } from "../core/mod.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import {
  differingPages,
  maskPages,
  maskPopcount,
  maskRuns,
  PAGE_BYTES,
  PAGE_DIGEST_BYTES,
  pageDigests,
  PageMasks,
  pageMasksSupported,
  pagesTouched,
} from "./page_masks.ts";

const BLOCK = 64 * 1024;

Deno.test("page masks: supported for 2 to 32 pages per block only", () => {
  assert.equal(pageMasksSupported(4096), false);
  assert.equal(pageMasksSupported(8192), true);
  assert.equal(pageMasksSupported(BLOCK), true);
  assert.equal(pageMasksSupported(128 * 1024), true);
  assert.equal(pageMasksSupported(256 * 1024), false);
  assert.throws(() => new PageMasks(256 * 1024), /2 to 32 pages.*received a block size of 262144/);
});

Deno.test("page masks: touched pages and their byte runs, the last block short", () => {
  assert.equal(pagesTouched(0, 1), 0b1);
  assert.equal(pagesTouched(4095, 4097), 0b11);
  assert.equal(pagesTouched(8192, 3 * 4096), 0b100);
  assert.equal(pagesTouched(0, 32 * 4096), 0xFFFF_FFFF);
  assert.equal(pagesTouched(4096, 32 * 4096), 0xFFFF_FFFE);
  assert.deepEqual(maskRuns(0b1011_0001, BLOCK), [[0, 4096], [4 * 4096, 2 * 4096], [
    7 * 4096,
    4096,
  ]]);
  // A 10000-byte last block: page 2 is 1808 bytes long, page 3 does not exist.
  assert.deepEqual(maskRuns(0b1110, 10000), [[4096, 10000 - 4096]]);
  assert.deepEqual(maskRuns(0b1000, 10000), []);
  assert.equal(maskPopcount(0xFFFF_FFFF), 32);
  assert.equal(maskPopcount(0b1011_0001), 4);
  assert.equal(maskPages(0b1011_0001, BLOCK), 4, "a mask's pages");
  assert.equal(maskPages(undefined, BLOCK), BLOCK / PAGE_BYTES, "whole: every page");
  assert.equal(maskPages(undefined, 5000), 2, "whole, a short last block");
});

/** The reference: per dirty block, the union of pages written, or "whole". */
type Model = Map<number, number | "whole">;

seededTest(
  "page masks: a seeded write workload gives each dirty block exactly the pages written",
  (prng) => {
    const blocks = 300;
    const maxMasks = 150;
    using dirty = new Bitmap(blocks);
    const masks = new PageMasks(BLOCK, maxMasks);
    const model: Model = new Map();
    // Blocks dirty before tracking began count as whole.
    for (let i = 0; i < 20; i++) {
      const block = prng.int(blocks);
      dirty.set(block);
      model.set(block, "whole");
    }
    const full = pagesTouched(0, BLOCK);
    for (let i = 0; i < 2000; i++) {
      const length = prng.int(4) === 0 ? 1 + prng.int(3 * BLOCK) : 1 + prng.int(2 * PAGE_BYTES);
      const offset = prng.int(blocks * BLOCK - length);
      masks.mark(dirty, offset, length);
      for (let at = offset; at < offset + length;) {
        const block = Math.floor(at / BLOCK);
        const to = Math.min(offset + length, (block + 1) * BLOCK);
        const bits = pagesTouched(at - block * BLOCK, to - block * BLOCK);
        const old = model.get(block);
        if (old === undefined) {
          const room = [...model.values()].filter((v) => v !== "whole").length < maxMasks;
          model.set(block, bits === full || !room ? "whole" : bits);
        } else if (old !== "whole") {
          const merged = (old | bits) >>> 0;
          model.set(block, merged === full ? "whole" : merged);
        }
        at = to;
      }
      dirty.setRange(
        Math.floor(offset / BLOCK),
        Math.floor((offset + length - 1) / BLOCK) - Math.floor(offset / BLOCK) + 1,
      );
    }
    let partial = 0;
    for (let block = 0; block < blocks; block++) {
      const expected = model.get(block);
      assert.equal(dirty.get(block), expected !== undefined, `block ${block} dirty`);
      if (expected === undefined) continue;
      const got = masks.get(block);
      assert.equal(got, expected === "whole" ? undefined : expected, `block ${block}`);
      if (got !== undefined) partial++;
    }
    assert.equal(masks.size, partial);
    // The changed pages: each mask's, every page of a whole block.
    const pages = [...model.values()].reduce<number>(
      (sum, v) => sum + (v === "whole" ? BLOCK / PAGE_BYTES : maskPopcount(v)),
      0,
    );
    assert.equal(masks.changedPages(dirty.popcount()), pages);
    assert.ok(masks.size <= maxMasks, `${masks.size} masks, at most ${maxMasks}`);
    assert.ok(partial > 0, "the workload left some blocks partly written");
    // Across threads: the pairs give back the same masks.
    const back = PageMasks.fromPairs(BLOCK, masks.toPairs());
    for (let block = 0; block < blocks; block++) assert.equal(back.get(block), masks.get(block));
    assert.equal(back.changedPages(dirty.popcount()), pages);
  },
);

seededTest(
  "page masks: a 1 TiB volume written page by page stays within 200 MiB of memory",
  (prng) => {
    const blocks = 1024 * 1024 * 1024 * 1024 / BLOCK; // 16 Mi blocks
    const before = Deno.memoryUsage().rss;
    using dirty = new Bitmap(blocks);
    const masks = new PageMasks(BLOCK);
    // Scattered 4 KiB writes to more blocks than masks are kept for.
    const writes = 1.15 * 1024 * 1024;
    for (let i = 0; i < writes; i++) {
      const block = prng.int(blocks);
      const offset = block * BLOCK + prng.int(16) * PAGE_BYTES;
      masks.mark(dirty, offset, PAGE_BYTES);
      dirty.set(block);
    }
    const grownMiB = (Deno.memoryUsage().rss - before) / (1024 * 1024);
    assert.equal(masks.size, 1 << 20, "masks stop at their bound; later blocks count whole");
    assert.ok(grownMiB <= 200, `memory grew by ${grownMiB.toFixed(1)} MiB`);
  },
);

seededTest(
  "page digests: the pages that differ between two copies, whole when all or none do",
  (prng) => {
    const old = prng.fill(new Uint8Array(BLOCK));
    const changed = old.slice();
    changed[3 * 4096 + 17] ^= 1;
    changed.set(prng.fill(new Uint8Array(5000)), 9 * 4096);
    assert.equal(differingPages(changed, pageDigests(old)), 0b110_0000_1000);
    assert.equal(differingPages(old, pageDigests(old)), 1, "nothing differs: the first page");
    assert.equal(differingPages(prng.fill(new Uint8Array(BLOCK)), pageDigests(old)), undefined);
    // A short last block has a short last page.
    const short = prng.fill(new Uint8Array(5000));
    const shortChanged = short.slice();
    shortChanged[4999] ^= 0xFF;
    assert.equal(pageDigests(short).length, 2 * PAGE_DIGEST_BYTES);
    assert.equal(differingPages(shortChanged, pageDigests(short)), 0b10);
    // A block of one page goes whole, changed or not.
    const page = prng.fill(new Uint8Array(4096));
    assert.equal(differingPages(page, pageDigests(page)), undefined);
  },
);
