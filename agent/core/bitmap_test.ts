import assert from "node:assert/strict";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { Bitmap, type Extent } from "./mod.ts";
import { core } from "./_wasm.ts";

/** The plain TypeScript reference: one boolean per bit. */
type Reference = boolean[];

function randomReference(prng: Prng, size: number): Reference {
  // Mix densities: sparse, dense and runs, so extents and both encodings are exercised.
  const mode = prng.int(4);
  const bits: Reference = [];
  let run = false;
  for (let i = 0; i < size; i++) {
    if (mode === 0) bits.push(prng.int(50) === 0);
    else if (mode === 1) bits.push(prng.int(50) !== 0);
    else if (mode === 2) bits.push(prng.int(2) === 0);
    else {
      if (prng.int(40) === 0) run = !run;
      bits.push(run);
    }
  }
  return bits;
}

function toBitmap(bits: Reference): Bitmap {
  const bitmap = new Bitmap(bits.length);
  bits.forEach((bit, i) => bit && bitmap.set(i));
  return bitmap;
}

function referenceExtents(bits: Reference): Extent[] {
  const runs: Extent[] = [];
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    const start = i;
    while (i < bits.length && bits[i]) i++;
    runs.push([start, i - start]);
  }
  return runs;
}

function assertSame(bitmap: Bitmap, bits: Reference, what: string): void {
  assert.equal(bitmap.size, bits.length, what);
  assert.equal(bitmap.popcount(), bits.filter(Boolean).length, `${what}: popcount`);
  assert.deepStrictEqual([...bitmap.extents()], referenceExtents(bits), `${what}: extents`);
  assert.deepStrictEqual(
    [...bitmap.extentPairs()],
    referenceExtents(bits).flat(),
    `${what}: pairs`,
  );
  for (let i = 0; i < bits.length; i++) assert.equal(bitmap.get(i), bits[i], `${what}: bit ${i}`);
}

/** Sizes around every alignment the core cares about: bytes, u32, u64 and v128 words. */
const SIZES = [0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4097];

seededTest(
  "or, and, andNot, popcount, countAnd and countAndNot match the reference on unaligned sizes",
  (prng) => {
    for (const size of SIZES) {
      for (let round = 0; round < 5; round++) {
        const a = randomReference(prng, size);
        const b = randomReference(prng, size);
        using x = toBitmap(a);
        using y = toBitmap(b);
        assertSame(x.clone().or(y), a.map((v, i) => v || b[i]), `or ${size}`);
        assertSame(x.clone().and(y), a.map((v, i) => v && b[i]), `and ${size}`);
        assertSame(x.clone().andNot(y), a.map((v, i) => v && !b[i]), `andNot ${size}`);
        assert.equal(x.isEmpty(), !a.includes(true));
        assert.equal(x.countAnd(y), a.filter((v, i) => v && b[i]).length, `countAnd ${size}`);
        assert.equal(x.countAndNot(y), a.filter((v, i) => v && !b[i]).length, `andNot ${size}`);
        assert.equal(y.countAndNot(x), b.filter((v, i) => v && !a[i]).length, `andNot ${size}`);
        assertSame(x, a, "the counts leave a as it was");
        assertSame(y, b, "the counts leave b as it was");
      }
    }
    using small = new Bitmap(10);
    using large = new Bitmap(11);
    assertThrowsCode(() => small.countAnd(large), "INVALID_ARGUMENT");
    assertThrowsCode(() => small.countAndNot(large), "INVALID_ARGUMENT");
  },
);

seededTest("hasRange: every bit of the range set, against the reference", (prng) => {
  for (const size of SIZES) {
    const bits = randomReference(prng, size);
    using bitmap = toBitmap(bits);
    for (let round = 0; round < 20; round++) {
      const start = prng.int(size + 1);
      const length = prng.int(size - start + 1);
      const expected = bits.slice(start, start + length).every(Boolean);
      assert.equal(bitmap.hasRange(start, length), expected, `${size}: [${start}, +${length})`);
    }
  }
  using runs = new Bitmap(300).setRange(10, 100).setRange(200, 50);
  assert.ok(runs.hasRange(10, 100) && runs.hasRange(50, 60) && runs.hasRange(249, 1));
  assert.ok(!runs.hasRange(9, 2) && !runs.hasRange(100, 11) && !runs.hasRange(150, 60));
  assertThrowsCode(() => runs.hasRange(290, 11), "INVALID_ARGUMENT");
  // A range inside a run, and one ending where the run ends or the bitmap does.
  using full = new Bitmap(4097).setRange(0, 4097);
  assert.ok(full.hasRange(1, 1) && full.hasRange(4000, 97) && full.hasRange(0, 4097));
  full.clear(4096);
  assert.ok(full.hasRange(0, 4096) && !full.hasRange(0, 4097) && !full.hasRange(4096, 1));
});

seededTest("set, clear and ranges match the reference", (prng) => {
  for (const size of SIZES.filter((s) => s > 0)) {
    const bits: Reference = new Array(size).fill(false);
    using bitmap = new Bitmap(size);
    for (let op = 0; op < 200; op++) {
      const start = prng.int(size);
      const length = prng.int(size - start + 1);
      const kind = prng.int(4);
      if (kind === 0) bitmap.set(start), bits[start] = true;
      else if (kind === 1) bitmap.clear(start), bits[start] = false;
      else if (kind === 2) {
        bitmap.setRange(start, length);
        bits.fill(true, start, start + length);
      } else {
        bitmap.clearRange(start, length);
        bits.fill(false, start, start + length);
      }
    }
    assertSame(bitmap, bits, `ranges ${size}`);
  }
});

seededTest("serialize round-trips and picks the shorter encoding", (prng) => {
  for (const size of [...SIZES, 100_000]) {
    for (let round = 0; round < 4; round++) {
      const bits = randomReference(prng, size);
      using bitmap = toBitmap(bits);
      const bytes = bitmap.serialize();
      assert.ok(bytes.length <= Math.ceil(size / 8) + 6, `encoded ${bytes.length} bytes`);
      using back = Bitmap.deserialize(bytes);
      assertSame(back, bits, `round trip ${size}`);
    }
  }
  // A sparse 16 Mi-bit set (a 1 TiB volume at 64 KiB) is a few bytes per run.
  using sparse = new Bitmap(16 * 1024 * 1024).setRange(5, 1000).set(9_999_999);
  assert.ok(sparse.serialize().length < 20);
});

seededTest("extents survive more runs than one WASM batch", (prng) => {
  const size = 40_001 + prng.int(64);
  using bitmap = new Bitmap(size);
  const bits: Reference = new Array(size).fill(false);
  for (let i = 0; i < size; i += 2) bitmap.set(i), bits[i] = true;
  assert.deepStrictEqual([...bitmap.extents()], referenceExtents(bits));
  assert.deepStrictEqual([...bitmap.extentPairs()], referenceExtents(bits).flat());
  using full = new Bitmap(size).setRange(0, size);
  assert.deepStrictEqual([...full.extents()], [[0, size]]);
  assert.deepStrictEqual([...full.extents(size - 3)], [[size - 3, 3]]);
});

Deno.test("fromBytes and toBytes share the zeroBlocks layout and reject stray bits", () => {
  using bitmap = Bitmap.fromBytes(new Uint8Array([0b101, 0b1]), 9);
  assert.deepStrictEqual([...bitmap.extents()], [[0, 1], [2, 1], [8, 1]]);
  assert.deepStrictEqual(bitmap.toBytes(), new Uint8Array([0b101, 0b1]));
  assertThrowsCode(() => Bitmap.fromBytes(new Uint8Array([0, 0b10]), 9), "INVALID_ARGUMENT");
  assertThrowsCode(() => Bitmap.fromBytes(new Uint8Array([0]), 9), "INVALID_ARGUMENT");
});

seededTest("deserialize rejects truncated, oversized and malformed input", (prng) => {
  using bitmap = toBitmap(randomReference(prng, 3000));
  bitmap.set(5);
  const good = bitmap.serialize();
  for (let cut = 0; cut < good.length; cut++) {
    assertThrowsCode(() => Bitmap.deserialize(good.subarray(0, cut)), "BITMAP_MALFORMED");
  }
  const withTrailing = new Uint8Array([...good, 0]);
  assertThrowsCode(() => Bitmap.deserialize(withTrailing), "BITMAP_MALFORMED");
  assertThrowsCode(() => Bitmap.deserialize(good, 2999), "BITMAP_MALFORMED");
  // Unknown encoding; a size varint that never ends; runs that touch, overlap or overrun.
  assertThrowsCode(() => Bitmap.deserialize(new Uint8Array([9, 8])), "BITMAP_MALFORMED");
  assertThrowsCode(
    () => Bitmap.deserialize(new Uint8Array([2, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])),
    "BITMAP_MALFORMED",
  );
  assertThrowsCode(
    () => Bitmap.deserialize(new Uint8Array([2, 10, 2, 0, 2, 0, 2])),
    "BITMAP_MALFORMED",
  );
  assertThrowsCode(() => Bitmap.deserialize(new Uint8Array([2, 10, 1, 8, 3])), "BITMAP_MALFORMED");
  assertThrowsCode(() => Bitmap.deserialize(new Uint8Array([2, 10, 1, 0, 0])), "BITMAP_MALFORMED");
  // Raw encoding with a bit set past the size.
  assertThrowsCode(() => Bitmap.deserialize(new Uint8Array([1, 3, 0b1000])), "BITMAP_MALFORMED");
  // Random garbage never crashes: it decodes or throws BITMAP_MALFORMED.
  for (let round = 0; round < 2000; round++) {
    const junk = prng.fill(new Uint8Array(prng.int(12)));
    if (prng.int(2) === 0 && junk.length > 0) junk[0] = 1 + prng.int(2);
    try {
      Bitmap.deserialize(junk, 1 << 20).free();
    } catch (err) {
      assert.equal((err as { code?: string }).code, "BITMAP_MALFORMED", String(err));
    }
  }
});

Deno.test("mismatched sizes, bad indexes and use after free are refused", () => {
  using a = new Bitmap(10);
  using b = new Bitmap(11);
  assertThrowsCode(() => a.or(b), "INVALID_ARGUMENT");
  assertThrowsCode(() => a.set(10), "INVALID_ARGUMENT");
  assertThrowsCode(() => a.get(-1), "INVALID_ARGUMENT");
  assertThrowsCode(() => a.setRange(5, 6), "INVALID_ARGUMENT");
  assertThrowsCode(() => new Bitmap(2 ** 31 + 1), "INVALID_ARGUMENT");
  const c = new Bitmap(10);
  c.free();
  c.free();
  assertThrowsCode(() => c.popcount(), "INVALID_ARGUMENT");
});

Deno.test("freed bitmaps give their memory back", () => {
  new Bitmap(8 * 1024 * 1024).free();
  const before = core.memory.buffer.byteLength;
  for (let i = 0; i < 2000; i++) {
    using a = new Bitmap(8 * 1024 * 1024);
    using b = a.clone().or(a);
    b.popcount();
  }
  assert.equal(core.memory.buffer.byteLength, before);
});

seededTest("equals: same size and same bits, nothing else", (prng) => {
  const size = 1 + prng.int(5000);
  using a = new Bitmap(size);
  for (let i = 0; i < size / 10; i++) a.set(prng.int(size));
  using b = a.clone();
  assert.ok(a.equals(b));
  const flip = prng.int(size);
  if (b.get(flip)) b.clear(flip);
  else b.set(flip);
  assert.ok(!a.equals(b), `bit ${flip} differs`);
  using larger = new Bitmap(size + 1);
  using empty = new Bitmap(size);
  assert.ok(!empty.equals(larger));
  using other = new Bitmap(size);
  assert.ok(empty.equals(other));
});
