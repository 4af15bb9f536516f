import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Cut } from "../tracker.ts";
import { detachCut } from "./detached_cut.ts";

const BLOCK = 4096;

/** A cut over `image` (whose last block is short) with `dirty`, counting its releases. */
function memoryCut(image: Uint8Array, dirty: Bitmap, failAt = -1) {
  const cut = {
    dirty,
    pointInTime: true,
    releases: 0,
    read(first: number, count: number): Promise<Uint8Array> {
      if (failAt >= first && failAt < first + count) {
        return Promise.reject(new PresyncError(ErrorCode.IO, "the fleece export went away"));
      }
      const end = Math.min(image.length, (first + count) * BLOCK);
      return Promise.resolve(image.slice(first * BLOCK, end));
    },
    release(): Promise<void> {
      cut.releases++;
      return Promise.resolve();
    },
  };
  return cut satisfies Cut;
}

Deno.test("a detached cut reads every dirty block as the original did, also the short last one, after the original was released", () =>
  withSeed(async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-detach-" });
    try {
      const blocks = 300;
      const image = prng.fill(new Uint8Array(blocks * BLOCK - 1000));
      const dirty = new Bitmap(blocks);
      for (let b = 0; b < blocks; b++) if (prng.nextU32() % 3 === 0) dirty.set(b);
      dirty.set(blocks - 1).setRange(40, 37);
      const original = memoryCut(image, dirty.clone());
      const path = `${dir}/copy`;
      const detached = await detachCut(original, path, BLOCK, image.length);
      assert.equal(original.releases, 1, "the original is released once copied");
      assert.ok(detached.dirty.equals(dirty));
      assert.equal(detached.pointInTime, true);
      // Concurrent reads of runs, in any order (the sender reads ahead).
      const reads = [...dirty.extents()].reverse().map(async ([start, length]) => {
        const got = await detached.read(start, length);
        const end = Math.min(image.length, (start + length) * BLOCK);
        assertBytesEqual(got, image.subarray(start * BLOCK, end), `run ${start}+${length}`);
      });
      await Promise.all(reads);
      const clean = [...Array(blocks).keys()].find((b) => !dirty.get(b))!;
      await assertRejectsCode(detached.read(clean, 1), ErrorCode.INVALID_ARGUMENT);
      await detached.release();
      await detached.release();
      await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
      dirty.free();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("a copy that fails keeps the original cut unreleased and leaves no file", () =>
  withSeed(async (prng) => {
    const dir = await Deno.makeTempDir({ prefix: "presync-detach-" });
    try {
      const image = prng.fill(new Uint8Array(64 * BLOCK));
      const dirty = new Bitmap(64).setRange(0, 64);
      const original = memoryCut(image, dirty, 50);
      await assertRejectsCode(
        detachCut(original, `${dir}/copy`, BLOCK, image.length),
        ErrorCode.IO,
      );
      assert.equal(original.releases, 0);
      assert.deepEqual([...Deno.readDirSync(dir)], []);
      dirty.free();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));
