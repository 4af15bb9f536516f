import assert from "node:assert/strict";
import { Bitmap, blake3 } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { FetchedBlock } from "../net/block_fetch.ts";
import { ZERO_ENTRY } from "../volume/block_hashes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { PostcopyView } from "./postcopy_view.ts";

const BS = 16;

/** Block `b` of the generation arriving: 16 bytes of `b + 1`. */
function blockOf(b: number): FetchedBlock {
  const data = new Uint8Array(BS).fill(b + 1);
  return { block: b, data, hash: blake3(data) };
}

/** A view over blocks 10..39 of 64, with a fetch that records its requests. */
function view(options: { failures?: number; timeoutMs?: number } = {}) {
  const dirty = new Bitmap(64);
  dirty.setRange(10, 30);
  const requests: [number, number][] = [];
  let failures = options.failures ?? 0;
  const v = new PostcopyView({
    dirty,
    readAheadBlocks: 4,
    timeoutMs: options.timeoutMs,
    fetch: (first, count) => {
      requests.push([first, count]);
      if (failures-- > 0) {
        return Promise.reject(
          new PresyncError(ErrorCode.CONNECTION_LOST, "link down", { retryable: true }),
        );
      }
      return Promise.resolve(Array.from({ length: count }, (_, i) => blockOf(first + i)));
    },
  });
  dirty.free();
  return { v, requests };
}

Deno.test("postcopy view: only the generation's blocks are missing, until the commit", async () => {
  const { v } = view();
  assert.equal(v.isMissing(9), false);
  assert.equal(v.isMissing(10), true);
  assert.equal(v.isMissing(39), true);
  assert.equal(v.isMissing(40), false);
  await v.markCommitted(() => Promise.resolve(ZERO_ENTRY));
  assert.equal(v.isMissing(10), false);
  assert.equal(v.isChanging(10), true, "zero status still changes with the generation");
  v.close();
});

Deno.test("postcopy view: one fetch per run; read-ahead grows for a sequential reader only", async () => {
  const { v, requests } = view();
  const got = await v.fetchBlocks(12, 2);
  assert.deepEqual(got.map((b) => b![0]), [13, 14]);
  assert.deepEqual(requests, [[12, 2]], "a first (random) read fetches only what it reads");
  await v.fetchBlocks(14, 1);
  assert.deepEqual(requests.at(-1), [14, 3], "sequential: 1 block + 2 ahead");
  // The read-ahead blocks come from the cache; the run goes on with a longer read-ahead.
  const again = await v.fetchBlocks(15, 2);
  assert.deepEqual(again.map((b) => b![0]), [16, 17]);
  assert.equal(v.stats.cacheHits, 2);
  await v.fetchBlocks(17, 1);
  assert.deepEqual(requests.at(-1), [17, 5], "1 block + 4 ahead");
  // A jump is random again; read-ahead stops at the end of the generation's blocks.
  await v.fetchBlocks(30, 1);
  assert.deepEqual(requests.at(-1), [30, 1]);
  await v.fetchBlocks(31, 1);
  await v.fetchBlocks(34, 1);
  await v.fetchBlocks(35, 1);
  await v.fetchBlocks(36, 1);
  await v.fetchBlocks(37, 2);
  assert.deepEqual(requests.at(-1), [38, 2], "37 was read ahead; stops at 39, the last block");
  v.close();
});

Deno.test("postcopy view: concurrent reads of one block share one fetch", async () => {
  const { v, requests } = view();
  const [a, b] = await Promise.all([v.fetchBlocks(20, 1), v.fetchBlocks(20, 1)]);
  assert.deepEqual(a, b);
  assert.equal(requests.filter(([first]) => first === 20).length, 1);
  v.close();
});

Deno.test("postcopy view: a failed fetch is retried until it succeeds", async () => {
  const { v, requests } = view({ failures: 2 });
  const got = await v.fetchBlocks(30, 1);
  assert.equal(got[0]![0], 31);
  assert.equal(requests.length, 3);
  v.close();
});

Deno.test("postcopy view: an unreachable source fails the read after the timeout", async () => {
  const { v } = view({ failures: 1000, timeoutMs: 300 });
  await assertRejectsCode(v.fetchBlocks(30, 1), ErrorCode.TIMEOUT);
  v.close();
});

Deno.test("postcopy view: a commit while waiting for the source sends the read to the replica", async () => {
  const { v } = view({ failures: 1000 });
  const pending = v.fetchBlocks(25, 2);
  await new Promise((resolve) => setTimeout(resolve, 50));
  await v.markCommitted(() => Promise.resolve(ZERO_ENTRY));
  assert.deepEqual(await pending, [null, null]);
  v.close();
});

Deno.test("postcopy view: the commit names blocks served with other bytes than committed", async () => {
  const { v } = view();
  await v.fetchBlocks(10, 2);
  const differing = await v.markCommitted((block) =>
    Promise.resolve(block === 11 ? blake3(new Uint8Array(BS)) : blockOf(block).hash!)
  );
  assert.deepEqual(differing, [11]);
  v.close();
});

Deno.test("postcopy view: blocks already staged are read there; only the rest is fetched, even with the source down", async () => {
  const dirty = new Bitmap(64).setRange(10, 30);
  const requests: [number, number][] = [];
  let sourceUp = true;
  const v = new PostcopyView({
    dirty,
    timeoutMs: 300,
    readStaged: (block) =>
      Promise.resolve(block % 2 === 0 || block >= 30 ? blockOf(block).data : null),
    fetch: (first, count) => {
      requests.push([first, count]);
      if (!sourceUp) {
        return Promise.reject(new PresyncError(ErrorCode.CONNECTION_LOST, "link down"));
      }
      return Promise.resolve(Array.from({ length: count }, (_, i) => blockOf(first + i)));
    },
  });
  dirty.free();
  const got = await v.fetchBlocks(10, 4);
  assert.deepEqual(got.map((b) => b![0]), [11, 12, 13, 14]);
  assert.deepEqual(requests, [[11, 1], [13, 1]], "the odd blocks from the source");
  assert.equal(v.stats.stagedBlocks, 2);
  sourceUp = false;
  assert.deepEqual((await v.fetchBlocks(30, 3)).map((b) => b![0]), [31, 32, 33]);
  await assertRejectsCode(v.fetchBlocks(21, 1), ErrorCode.TIMEOUT);
  v.close();
});
