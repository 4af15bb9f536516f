import { PositionalFile } from "../../agent/nbd/mod.ts";

/** Default memory for preserved blocks before they spill to a file: 64 MiB. */
export const DEFAULT_PRESERVE_MEMORY_BYTES = 64 * 1024 * 1024;

/**
 * The old contents of blocks overwritten while their generation is being sent
 * (copy-before-write). Blocks are kept in memory up to `memoryLimitBytes`; beyond that they
 * are appended to a spill file (created on first use, removed by `close()`), so a long
 * send under a heavy write load costs disk, not memory. A block is preserved at most once
 * per generation: the first overwrite's old content is the content at the cut. A block that
 * was all zeros (a hole, or zero bytes) is kept as a length only, costing neither memory nor
 * spill, so zeroing a zeroed range during a send copies nothing.
 */
export class PreservedBlocks {
  readonly #spillPath: string;
  readonly #memoryLimitBytes: number;
  readonly #memory = new Map<number, Uint8Array>();
  readonly #spilled = new Map<number, { offset: number; length: number }>();
  /** Blocks whose content at the cut was all zeros, with their lengths. */
  readonly #zero = new Map<number, number>();
  #memoryBytes = 0;
  #spillEnd = 0;
  #spill: Promise<PositionalFile> | null = null;
  #closed = false;

  constructor(spillPath: string, memoryLimitBytes: number = DEFAULT_PRESERVE_MEMORY_BYTES) {
    this.#spillPath = spillPath;
    this.#memoryLimitBytes = memoryLimitBytes;
  }

  /** Whether `block` is preserved (its old content is here). */
  has(block: number): boolean {
    return this.#memory.has(block) || this.#spilled.has(block) || this.#zero.has(block);
  }

  /** Number of preserved blocks. */
  get count(): number {
    return this.#memory.size + this.#spilled.size + this.#zero.size;
  }

  /** Number of blocks preserved as zeros (no bytes held). */
  get zeroCount(): number {
    return this.#zero.size;
  }

  /** Bytes held in memory. */
  get memoryBytes(): number {
    return this.#memoryBytes;
  }

  /** Bytes written to the spill file. */
  get spilledBytes(): number {
    return this.#spillEnd;
  }

  /**
   * Keeps `data` as the content of `block` (ignored when the block is preserved already).
   * `has(block)` turns true only once the bytes are safely held.
   */
  async put(block: number, data: Uint8Array): Promise<void> {
    if (this.has(block) || this.#closed) return;
    if (this.#memoryBytes + data.length <= this.#memoryLimitBytes) {
      this.#memory.set(block, data);
      this.#memoryBytes += data.length;
      return;
    }
    this.#spill ??= PositionalFile.open(this.#spillPath, { create: true });
    const file = await this.#spill;
    const offset = this.#spillEnd;
    this.#spillEnd += data.length;
    await file.write(offset, data);
    this.#spilled.set(block, { offset, length: data.length });
  }

  /** Keeps "all `length` bytes were zero" as the content of `block` (unless preserved). */
  putZero(block: number, length: number): void {
    if (this.has(block) || this.#closed) return;
    this.#zero.set(block, length);
  }

  /** The preserved content of `block`, or undefined. */
  async get(block: number): Promise<Uint8Array | undefined> {
    const zeroLength = this.#zero.get(block);
    if (zeroLength !== undefined) return new Uint8Array(zeroLength);
    const inMemory = this.#memory.get(block);
    if (inMemory) return inMemory;
    const where = this.#spilled.get(block);
    if (!where || !this.#spill) return undefined;
    return (await this.#spill).read(where.offset, new Uint8Array(where.length));
  }

  /** Drops everything and removes the spill file. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#memory.clear();
    this.#spilled.clear();
    this.#zero.clear();
    this.#memoryBytes = 0;
    if (this.#spill) {
      await (await this.#spill).close();
      await Deno.remove(this.#spillPath).catch(() => {});
    }
  }
}
