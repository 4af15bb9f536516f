import type { Prng } from "../fixtures/prng.ts";

/**
 * Flips single bits at a given rate per byte, positions drawn from a seeded generator
 * (geometric gaps), so a corrupted run can be replayed from its seed.
 */
export class BitFlipper {
  readonly #prng: Prng;
  readonly #ratePerByte: number;
  #untilNext: number;
  /** Bits flipped so far. */
  flipped = 0;

  /** `ratePerByte` from 0 (never) to 1 (every byte). */
  constructor(prng: Prng, ratePerByte: number) {
    this.#prng = prng;
    this.#ratePerByte = ratePerByte;
    this.#untilNext = this.#gap();
  }

  #gap(): number {
    if (this.#ratePerByte <= 0) return Infinity;
    if (this.#ratePerByte >= 1) return 0;
    const u = (this.#prng.nextU32() + 1) / 0x1_0000_0001;
    return Math.floor(Math.log(u) / Math.log(1 - this.#ratePerByte));
  }

  /** Corrupts `chunk` in place. */
  apply(chunk: Uint8Array): void {
    let offset = 0;
    while (offset + this.#untilNext < chunk.length) {
      offset += this.#untilNext;
      chunk[offset] ^= 1 << (this.#prng.nextU32() & 7);
      this.flipped++;
      offset++;
      this.#untilNext = this.#gap();
    }
    this.#untilNext -= chunk.length - offset;
  }
}
