import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { needCeph } from "../../fixtures/ceph.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { MAX_CACHED_PIECES, PIECE_BYTES, RbdFile } from "./_rbd_file.ts";
import { withScratchImage } from "./_test_cluster.ts";

const ceph = await needCeph();
/** More than the cache holds, and a short last piece. */
const SIZE = (MAX_CACHED_PIECES + 64) * PIECE_BYTES + 1000;

Deno.test({
  name: "the manifest file's piece cache: scattered writes over more pieces than it holds " +
    "(dirty ones evicted early), read back before and after sync, reach the image exactly",
  ignore: ceph.ignore,
  fn: () =>
    withSeed((prng) =>
      withScratchImage(SIZE, async ({ pool, name, image }) => {
        const model = new Uint8Array(SIZE);
        let released = 0;
        const file = await RbdFile.over(image, () => released++);
        assert.equal(await file.size(), SIZE);
        for (let round = 0; round < 3; round++) {
          // Disjoint writes in flight together (as a file, the order of overlapping ones in
          // flight is not defined); an overlapping one waits for those.
          const writes: Promise<void>[] = [];
          const ranges: [number, number][] = [];
          for (let i = 0; i < 400; i++) {
            const length = 1 + prng.int(3 * PIECE_BYTES);
            const offset = prng.int(SIZE - length + 1);
            const data = prng.fill(new Uint8Array(length));
            model.set(data, offset);
            if (ranges.some(([a, b]) => offset < b && a < offset + length)) {
              await Promise.all(writes.splice(0));
              ranges.length = 0;
            }
            ranges.push([offset, offset + length]);
            writes.push(file.write(offset, data));
          }
          await Promise.all(writes);
          const back = new Uint8Array(SIZE);
          assert.equal(await file.read(0, back), SIZE);
          assertBytesEqual(back, model, `round ${round}, through the cache`);
          await file.sync();
        }
        // A second file on the same handle sees the same bytes; a fresh handle sees the image.
        const twin = await RbdFile.over(image, () => released++);
        const tail = new Uint8Array(5000);
        assert.equal(await twin.read(SIZE - 1000, tail), 1000, "reads stop at the end");
        assertBytesEqual(tail.subarray(0, 1000), model.subarray(SIZE - 1000), "tail");
        twin.close();
        file.close();
        file.close();
        assert.equal(released, 2, "each file releases its handle once");
        await assert.rejects(file.write(SIZE - 10, new Uint8Array(11)), RangeError);
        const fresh = await pool.openImage(name, { readOnly: true });
        try {
          assertBytesEqual(await fresh.read(0, SIZE), model, "the image after sync");
        } finally {
          await fresh.close();
        }
      })
    ),
});
