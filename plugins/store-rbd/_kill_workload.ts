/**
 * The source of the RBD kill -9 tests: a volume whose every generation is a pure function of
 * a seed, so the killed child and the test that checks it agree on the bytes of each
 * generation without sharing anything but the seed. Also the child's way of sending one
 * generation (as a source would: what is durably staged is not sent again).
 *
 * @module
 */

import { Bitmap, blake3, blockEntries } from "../../agent/core/mod.ts";
import { toHex } from "../../agent/hex.ts";
import type { ReplicaVolume } from "../../agent/store/replica_volume.ts";
import { Prng } from "../../fixtures/prng.ts";

/** Block size of the kill tests' volume. */
export const KILL_BLOCK = 64 * 1024;
/**
 * Size of the kill tests' volume: 96 blocks and a short last one, a whole number of 512-byte
 * sectors as VM disks are (QEMU 7.2's rbd driver asserts on an image that ends mid-sector).
 */
export const KILL_SIZE = 96 * KILL_BLOCK + 4096;
/** The kill tests' volume name. */
export const KILL_VOLUME = "killed";

const BLOCKS = Math.ceil(KILL_SIZE / KILL_BLOCK);

/** Generation g of the seeded source: its bytes and the blocks it changed. */
export class SeededSource {
  /** The seed every generation derives from. */
  readonly seed: number;
  readonly #images: Uint8Array[] = [new Uint8Array(KILL_SIZE)];
  readonly #changed: number[][] = [[]];

  constructor(seed: number) {
    this.seed = seed;
  }

  #build(generation: number): void {
    while (this.#images.length <= generation) {
      const g = this.#images.length;
      const prng = new Prng((this.seed ^ Math.imul(g, 0x9e3779b1)) >>> 0);
      const image = this.#images[g - 1].slice();
      const count = g === 1 ? BLOCKS : 8 + prng.int(24);
      const blocks = new Set<number>();
      while (blocks.size < count) blocks.add(prng.int(BLOCKS));
      const sorted = [...blocks].sort((a, b) => a - b);
      for (const b of sorted) {
        const range = image.subarray(b * KILL_BLOCK, Math.min((b + 1) * KILL_BLOCK, KILL_SIZE));
        if (prng.int(5) === 0) range.fill(0);
        else prng.fill(range);
      }
      this.#images.push(image);
      this.#changed.push(sorted);
    }
  }

  /** The source's bytes at `generation` (0: all zeros). Do not modify. */
  image(generation: number): Uint8Array {
    this.#build(generation);
    return this.#images[generation];
  }

  /** The blocks `generation` changed (its dirty set). */
  blocks(generation: number): number[] {
    this.#build(generation);
    return this.#changed[generation];
  }

  /** The Merkle root of the source at `generation`. */
  root(generation: number): string {
    return toHex(blake3(blockEntries(this.image(generation), KILL_BLOCK)));
  }
}

/**
 * Sends generation `generation` of `source` into `replica`: begin (resuming what is durably
 * staged), the missing blocks in batches of 8 with a flush after each, then commit. `onCommit`
 * runs just before the commit starts.
 */
export async function sendGeneration(
  replica: ReplicaVolume,
  source: SeededSource,
  generation: number,
  onCommit: () => void = () => {},
): Promise<void> {
  const image = source.image(generation);
  const blocks = source.blocks(generation);
  using dirty = new Bitmap(BLOCKS);
  for (const b of blocks) dirty.set(b);
  await replica.beginGeneration(generation, dirty, 1000 + generation);
  const durable = replica.resumeInfo().staged?.received ?? null;
  const missing = blocks.filter((b) => !durable?.get(b));
  durable?.free();
  for (let at = 0; at < missing.length; at += 8) {
    await replica.stage(
      missing.slice(at, at + 8).map((block) => {
        const data = image.slice(block * KILL_BLOCK, Math.min((block + 1) * KILL_BLOCK, KILL_SIZE));
        return { block, data, hash: blake3(data) };
      }),
    );
    await replica.flush();
  }
  onCommit();
  await replica.commit(generation, source.root(generation));
}
