import assert from "node:assert/strict";
import { ErrorCode } from "../../agent/errors.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { needCeph } from "../../fixtures/ceph.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { AioWindow } from "./aio_window.ts";
import { RadosCluster } from "./rados_cluster.ts";
import { ImageFeature } from "./rbd_image.ts";
import { withScratchImage } from "./_test_cluster.ts";

const ceph = await needCeph();
const MiB = 1 << 20;
/** 1 MiB objects, so that a few MiB of image span several RADOS objects. */
const SMALL_OBJECTS = { create: { orderBits: 20 } };

Deno.test({
  name: "writes at unaligned offsets read back byte for byte, across objects and a reopen",
  ignore: ceph.ignore,
  fn: () =>
    withSeed(async (prng) => {
      const size = 6 * MiB + 12345;
      const model = new Uint8Array(size);
      await withScratchImage(size, async ({ pool, name, image }) => {
        for (let i = 0; i < 40; i++) {
          const length = 1 + prng.int(300_000);
          const offset = prng.int(size - length + 1);
          const data = prng.fill(new Uint8Array(length));
          await image.write(offset, data);
          model.set(data, offset);
        }
        for (let i = 0; i < 20; i++) {
          const length = 1 + prng.int(200_000);
          const offset = prng.int(size - length + 1);
          assertBytesEqual(
            await image.read(offset, length),
            model.subarray(offset, offset + length),
            `read of ${length} bytes at ${offset}`,
          );
        }
        await image.close();
        await using again = await pool.openImage(name);
        assertBytesEqual(await again.read(0, size), model, "whole image after reopen");
      }, SMALL_OBJECTS);
    }),
});

Deno.test({
  name:
    "a write past the end fails with INVALID_ARGUMENT and changes nothing; reads stop at the end",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(MiB, async ({ image }) => {
      const tail = new Uint8Array(100).fill(7);
      await assertRejectsCode(image.write(MiB - 50, tail), ErrorCode.INVALID_ARGUMENT);
      await assertRejectsCode(image.writeZeroes(MiB, 1), ErrorCode.INVALID_ARGUMENT);
      assertBytesEqual(await image.read(MiB - 100, 100), new Uint8Array(100), "untouched tail");
      assert.equal((await image.read(MiB - 10, 100)).length, 10);
      await assertRejectsCode(image.read(MiB + 10, 1), ErrorCode.INVALID_ARGUMENT);
    }),
});

Deno.test({
  name: "write-zeroes and discard make ranges read as zeros; stat and resize report the size",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(4 * MiB, async ({ image }) => {
      const stat = await image.stat();
      assert.deepEqual(
        [stat.sizeBytes, stat.objectSizeBytes, stat.objectCount, stat.orderBits],
        [4 * MiB, MiB, 4, 20],
      );
      assert.ok(stat.features & ImageFeature.FAST_DIFF, "fast-diff on by default");
      const ones = new Uint8Array(4 * MiB).fill(1);
      await image.write(0, ones);
      await image.writeZeroes(1000, 3333);
      await image.discard(2 * MiB, MiB);
      const expected = ones.slice();
      expected.fill(0, 1000, 4333);
      expected.fill(0, 2 * MiB, 3 * MiB);
      assertBytesEqual(await image.read(0, 4 * MiB), expected, "after zeroes and discard");
      await image.resize(8 * MiB);
      assert.equal((await image.stat()).sizeBytes, 8 * MiB);
      assertBytesEqual(await image.read(4 * MiB, MiB), new Uint8Array(MiB), "grown part");
      await image.resize(MiB);
      assert.equal((await image.stat()).objectCount, 1);
      assert.equal((await image.read(0, 2 * MiB)).length, MiB);
    }, SMALL_OBJECTS),
});

Deno.test({
  name: "an aio window keeps at most depth writes in flight and writes every block",
  ignore: ceph.ignore,
  fn: () =>
    withSeed(async (prng) => {
      const blocks = 256, blockSize = 64 * 1024;
      await withScratchImage(blocks * blockSize, async ({ image }) => {
        const model = prng.fill(new Uint8Array(blocks * blockSize));
        const window = new AioWindow(image, 16);
        let deepest = 0;
        const order = Array.from({ length: blocks }, (_, i) => i);
        for (let i = order.length - 1; i > 0; i--) {
          const j = prng.int(i + 1);
          [order[i], order[j]] = [order[j], order[i]];
        }
        for (const block of order) {
          await window.write(
            block * blockSize,
            model.subarray(block * blockSize, (block + 1) * blockSize),
          );
          deepest = Math.max(deepest, window.inflight);
          assert.ok(window.inflight <= 16, `${window.inflight} in flight`);
        }
        await window.drain();
        assert.equal(window.inflight, 0);
        assert.ok(deepest > 1, "writes overlapped");
        await image.flush();
        assertBytesEqual(await image.read(0, model.length), model, "image after the window");
      });
    }),
});

Deno.test({
  name: "an aio window keeps its first failure and refuses every later write",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(MiB, async ({ pool, name }) => {
      await using readOnly = await pool.openImage(name, { readOnly: true });
      const window = new AioWindow(readOnly, 4);
      await window.write(0, new Uint8Array(4096));
      const failure = await assertRejectsCode(window.drain(), ErrorCode.IO);
      assert.match(failure.message, /EROFS/);
      await assertRejectsCode(window.write(8192, new Uint8Array(4096)), ErrorCode.IO);
      await assertRejectsCode(window.drain(), ErrorCode.IO);
    }),
});

Deno.test({
  name: "snapshots hold acknowledged writes (cache on), list in order, read back, roll back",
  ignore: ceph.ignore,
  fn: () =>
    withSeed(async (prng) => {
      const size = 3 * MiB;
      await withScratchImage(size, async ({ pool, name, image }) => {
        const g1 = prng.fill(new Uint8Array(size));
        const window = new AioWindow(image, 8);
        for (let at = 0; at < size; at += 64 * 1024) {
          await window.write(at, g1.subarray(at, at + 64 * 1024));
        }
        await window.drain();
        const before = Date.now();
        await image.snapshots.create("presync-g1");
        const g2 = g1.slice();
        const patch = prng.fill(new Uint8Array(5000));
        g2.set(patch, 777_777);
        await image.write(777_777, patch);
        await image.snapshots.create("presync-g2");
        await image.write(0, new Uint8Array(size).fill(9));

        const list = await image.snapshots.list();
        assert.deepEqual(
          list.map((s) => s.name),
          ["presync-g1", "presync-g2"],
        );
        assert.ok(list[0].id < list[1].id);
        assert.ok(list.every((s) => s.sizeBytes === size));
        assert.ok(
          list.every((s) => Math.abs(s.createdAtMs - before) < 10 * 60_000),
          "plausible times",
        );

        await using atG1 = await pool.openImage(name, { snapshot: "presync-g1" });
        assertBytesEqual(await atG1.read(0, size), g1, "image opened at g1");
        await assertRejectsCode(atG1.write(0, new Uint8Array(1)), ErrorCode.IO);
        await image.setReadSnapshot("presync-g2");
        assertBytesEqual(await image.read(0, size), g2, "head handle reading g2");
        await image.setReadSnapshot(null);

        await image.snapshots.rollback("presync-g2");
        assertBytesEqual(await image.read(0, size), g2, "head after rollback to g2");
        await image.snapshots.rollback("presync-g1");
        assertBytesEqual(await image.read(0, size), g1, "head after rollback to g1");

        await image.snapshots.protect("presync-g1");
        assert.equal(await image.snapshots.isProtected("presync-g1"), true);
        await assertRejectsCode(image.snapshots.remove("presync-g1"), ErrorCode.IO);
        await image.snapshots.unprotect("presync-g1");
        await image.snapshots.remove("presync-g1");
        assert.deepEqual((await image.snapshots.list()).map((s) => s.name), ["presync-g2"]);
        await assertRejectsCode(image.snapshots.rollback("presync-g1"), ErrorCode.VOLUME_NOT_FOUND);
        await assertRejectsCode(image.snapshots.create("presync-g2"), ErrorCode.VOLUME_EXISTS);
      }, SMALL_OBJECTS);
    }),
});

Deno.test({
  name: "metadata keys are set, read, listed, overwritten and removed",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(MiB, async ({ pool, name, image }) => {
      assert.equal(await image.metadata.get("presync.generation"), undefined);
      assert.deepEqual(await image.metadata.list(), new Map());
      const long = "é".repeat(3000);
      await image.metadata.set("presync.generation", "1");
      await image.metadata.set("presync.root", long);
      await image.metadata.set("presync.generation", "2");
      await image.close();
      await using again = await pool.openImage(name);
      assert.equal(await again.metadata.get("presync.generation"), "2");
      assert.equal(await again.metadata.get("presync.root"), long);
      assert.deepEqual(
        await again.metadata.list(),
        new Map([["presync.generation", "2"], ["presync.root", long]]),
      );
      await again.metadata.remove("presync.root");
      await again.metadata.remove("presync.root");
      assert.deepEqual([...(await again.metadata.list()).keys()], ["presync.generation"]);
      await assertRejectsCode(again.metadata.set("bad\0key", "x"), ErrorCode.INVALID_ARGUMENT);
    }),
});

Deno.test({
  name: "diff since a snapshot covers every byte written after it and no object left alone",
  ignore: ceph.ignore,
  fn: () =>
    withSeed(async (prng) => {
      const objects = 16, size = objects * MiB;
      await withScratchImage(size, async ({ image }) => {
        await image.write(0, prng.fill(new Uint8Array(size)));
        await image.snapshots.create("g1");
        const written: [number, number][] = [];
        const touched = new Set<number>();
        for (let i = 0; i < 12; i++) {
          const length = 1 + prng.int(100_000);
          const offset = prng.int(size - length + 1);
          await image.write(offset, prng.fill(new Uint8Array(length)));
          written.push([offset, length]);
          for (
            let o = Math.floor(offset / MiB);
            o <= Math.floor((offset + length - 1) / MiB);
            o++
          ) {
            touched.add(o);
          }
        }
        await image.snapshots.create("g2");
        await image.write(0, new Uint8Array(size));
        await image.setReadSnapshot("g2");
        const extents = await image.diff({ fromSnapshot: "g1" });
        await image.setReadSnapshot(null);
        const covered = (offset: number) =>
          extents.some((e) => e.offsetBytes <= offset && offset < e.offsetBytes + e.lengthBytes);
        for (const [offset, length] of written) {
          for (const at of [offset, offset + (length >> 1), offset + length - 1]) {
            assert.ok(covered(at), `byte ${at} written after g1 is not in the diff`);
          }
        }
        for (const e of extents) {
          const first = Math.floor(e.offsetBytes / MiB);
          const last = Math.floor((e.offsetBytes + e.lengthBytes - 1) / MiB);
          for (let o = first; o <= last; o++) assert.ok(touched.has(o), `object ${o} reported`);
        }
        const whole = await image.diff({ fromSnapshot: "g1", wholeObject: true });
        assert.ok(whole.every((e) => e.offsetBytes % MiB === 0), "whole-object extents");
        const allocated: number[][] = [];
        for (const e of await image.diff()) {
          const last = allocated.at(-1);
          if (last && last[0] + last[1] === e.offsetBytes) last[1] += e.lengthBytes;
          else allocated.push([e.offsetBytes, e.lengthBytes]);
        }
        assert.deepEqual(allocated, [[0, size]], "every byte of the head was written");
      }, SMALL_OBJECTS);
    }),
});

Deno.test({
  name: "diff also works without fast-diff, where librbd calls back from its own threads",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(4 * MiB, async ({ image }) => {
      const features = (await image.stat()).features;
      assert.equal(features, ImageFeature.LAYERING | ImageFeature.EXCLUSIVE_LOCK);
      await image.snapshots.create("g1");
      await image.write(MiB + 100, new Uint8Array(5000).fill(1));
      await image.write(3 * MiB, new Uint8Array(10).fill(2));
      const extents = await image.diff({ fromSnapshot: "g1" });
      const covers = (offset: number) =>
        extents.some((e) => e.offsetBytes <= offset && offset < e.offsetBytes + e.lengthBytes);
      for (const at of [MiB + 100, MiB + 5099, 3 * MiB, 3 * MiB + 9]) {
        assert.ok(covers(at), `${at}`);
      }
      assert.ok(!covers(0) && !covers(2 * MiB), "untouched objects are not reported");
    }, {
      create: { orderBits: 20, features: ImageFeature.LAYERING | ImageFeature.EXCLUSIVE_LOCK },
    }),
});

Deno.test({
  name: "a held exclusive lock refuses another client's writes until its holder closes",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(MiB, async ({ pool, name, image, ceph: cluster }) => {
      await image.acquireExclusiveLock();
      assert.equal(await image.isExclusiveLockOwner(), true);
      await using other = await RadosCluster.connect({ confPath: cluster.confPath });
      const otherPool = other.openPool(pool.name);
      const intruder = await otherPool.openImage(name);
      const refused = await assertRejectsCode(intruder.write(0, new Uint8Array(512)), ErrorCode.IO);
      assert.match(refused.message, /EROFS/);
      await intruder.close();
      await image.close();
      await using later = await otherPool.openImage(name);
      await later.write(0, new Uint8Array(512).fill(3));
      await later.flush();
      assertBytesEqual(await later.read(0, 512), new Uint8Array(512).fill(3), "write after close");
    }),
});

Deno.test({
  name: "missing images, existing names and closed handles give named errors",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(MiB, async ({ pool, name, image }) => {
      await assertRejectsCode(pool.openImage(`${name}-none`), ErrorCode.VOLUME_NOT_FOUND);
      await assertRejectsCode(pool.createImage(name, MiB), ErrorCode.VOLUME_EXISTS);
      await assertRejectsCode(
        pool.openImage(name, { snapshot: "none" }),
        ErrorCode.VOLUME_NOT_FOUND,
      );
      await assertRejectsCode(pool.openImage("a/b"), ErrorCode.INVALID_ARGUMENT);
      assert.ok((await pool.listImages()).includes(name));
      await image.snapshots.create("keep");
      await image.close();
      await assertRejectsCode(image.read(0, 1), ErrorCode.IO);
      await image.close();
      await assertRejectsCode(pool.removeImage(name), ErrorCode.IO);
    }),
});
