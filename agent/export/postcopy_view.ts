import { type Bitmap, blake3, isZero } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { MAX_FETCH_BLOCKS } from "../net/block_fetch.ts";
import { Signal } from "../wire/_signal.ts";
import type { FetchedBlock } from "../net/block_fetch.ts";
import { constantTimeEqual } from "../bytes.ts";
import { ZERO_ENTRY } from "../volume/block_hashes.ts";
import type { PostcopySource } from "./replica_export.ts";

/** Options of {@linkcode PostcopyView}. */
export interface PostcopyViewOptions {
  /** The blocks of the generation still arriving (copied). */
  dirty: Bitmap;
  /** Fetches `count` consecutive blocks from `first` from the source. */
  fetch(first: number, count: number): Promise<FetchedBlock[]>;
  /** A block of the generation that already arrived at the destination (null: not yet). */
  readStaged?(block: number): Promise<Uint8Array | null>;
  /** Most missing blocks fetched past the end of a sequential reader's read (default 16). */
  readAheadBlocks?: number;
  /** Fetched blocks kept for re-reads until the commit (default 1024). */
  cacheBlocks?: number;
  /** How long a read waits for an unreachable source before failing, ms (default 120 s). */
  timeoutMs?: number;
  /** Called on each failed fetch attempt (it is retried). */
  onRetry?: (err: unknown) => void;
}

/** Counters of a {@linkcode PostcopyView}. */
export interface PostcopyStats {
  /** Blocks fetched from the source. */
  fetchedBlocks: number;
  /** Fetch requests sent. */
  fetches: number;
  /** Reads of missing blocks served from the cache of fetched ones. */
  cacheHits: number;
  /** Missing blocks read from the staging area (they had arrived, not yet committed). */
  stagedBlocks: number;
}

/**
 * The destination's view of an evacuation's final generation while it arrives: its blocks
 * are missing from the replica until the commit, so a read of one is served from the staging
 * area when the block already arrived, else fetched from the source (with read-ahead, and
 * cached until the commit); everything else is the replica's. After
 * {@linkcode markCommitted} nothing is missing. Every block served is remembered with its
 * hash, so the commit can confirm the VM saw exactly what was committed.
 */
export class PostcopyView implements PostcopySource {
  readonly #dirty: Bitmap;
  readonly #options: PostcopyViewOptions;
  readonly #cache = new Map<number, FetchedBlock>();
  readonly #inFlight = new Map<number, Promise<FetchedBlock | null>>();
  /** Hash served per block (null: zeros). */
  readonly #served = new Map<number, Uint8Array | null>();
  #committed = false;
  /** Where a sequential reader's next read starts, and its current read-ahead in blocks. */
  #nextBlock = -1;
  #ahead = 0;
  /** Notified at the commit (and close): retries waiting for the source stop waiting. */
  readonly #committedSignal = new Signal();
  readonly stats: PostcopyStats = { fetchedBlocks: 0, fetches: 0, cacheHits: 0, stagedBlocks: 0 };

  constructor(options: PostcopyViewOptions) {
    this.#dirty = options.dirty.clone();
    this.#options = options;
  }

  /** Whether the final generation is committed (nothing is missing any more). */
  get committed(): boolean {
    return this.#committed;
  }

  isMissing(block: number): boolean {
    return !this.#committed && this.#dirty.get(block);
  }

  isChanging(block: number): boolean {
    return this.#dirty.get(block);
  }

  /**
   * The bytes of `count` missing blocks from `first`; an entry is null when the generation
   * was committed meanwhile (the caller reads the replica instead).
   */
  async fetchBlocks(first: number, count: number): Promise<(Uint8Array | null)[]> {
    const needed = (block: number) => !this.#cache.has(block) && !this.#inFlight.has(block);
    let runStart = -1;
    for (let block = first; block < first + count; block++) {
      if (needed(block) && runStart < 0) runStart = block;
      if (!needed(block) && runStart >= 0) {
        this.#startFetch(runStart, block - runStart);
        runStart = -1;
      }
    }
    // Read-ahead only for a sequential reader (this read starts where the last one ended),
    // growing while it stays sequential: a random reader's fetches stay small, which matters
    // on a slow link, where every block fetched costs transfer time.
    const sequential = first === this.#nextBlock;
    this.#ahead = sequential
      ? Math.min(this.#options.readAheadBlocks ?? 16, Math.max(2, this.#ahead * 2))
      : 0;
    this.#nextBlock = first + count;
    if (runStart >= 0) {
      const limit = Math.min(this.#dirty.size, first + count + this.#ahead);
      let end = first + count;
      while (end < limit && this.isMissing(end) && needed(end)) end++;
      this.#startFetch(runStart, end - runStart);
    }
    const wanted: Promise<FetchedBlock | null>[] = [];
    for (let block = first; block < first + count; block++) {
      const cached = this.#cache.get(block);
      if (cached) this.stats.cacheHits++;
      wanted.push(cached ? Promise.resolve(cached) : this.#inFlight.get(block)!);
    }
    const blocks = await Promise.all(wanted);
    return blocks.map((b) => {
      if (!b) return null;
      this.#served.set(b.block, b.hash);
      return b.data;
    });
  }

  /** Fetches a run in pieces of at most MAX_FETCH_BLOCKS, each retried until done. */
  #startFetch(first: number, count: number): void {
    for (let at = first; at < first + count; at += MAX_FETCH_BLOCKS) {
      const n = Math.min(MAX_FETCH_BLOCKS, first + count - at);
      const piece = this.#fetchRetrying(at, n);
      for (let i = 0; i < n; i++) {
        const block = at + i;
        const one = piece.then((blocks) => blocks?.[i] ?? null);
        one.catch(() => {}).finally(() => this.#inFlight.delete(block));
        this.#inFlight.set(block, one);
      }
    }
  }

  async #fetchRetrying(first: number, count: number): Promise<FetchedBlock[] | null> {
    const timeoutMs = this.#options.timeoutMs ?? 120_000;
    const started = performance.now();
    let delay = 100;
    while (true) {
      if (this.#committed) return null;
      try {
        const blocks = await this.#stagedThenSource(first, count);
        if (this.#committed) return null;
        for (const b of blocks) this.#remember(b);
        return blocks;
      } catch (err) {
        if (this.#committed) return null;
        this.#options.onRetry?.(err);
        if (performance.now() - started > timeoutMs) {
          throw new PresyncError(
            ErrorCode.TIMEOUT,
            `block ${first} of the generation still arriving could not be fetched from the ` +
              `source for ${Math.round(timeoutMs / 1000)} s (${err})`,
            { cause: err },
          );
        }
        await this.#committedSignal.wait(delay);
        delay = Math.min(2000, delay * 2);
      }
    }
  }

  /**
   * Blocks that already arrived in the staging area are read there (so they do not depend on
   * the link); the runs still missing come from the source.
   */
  async #stagedThenSource(first: number, count: number): Promise<FetchedBlock[]> {
    const out: (FetchedBlock | null)[] = new Array(count).fill(null);
    const readStaged = this.#options.readStaged;
    if (readStaged) {
      await Promise.all(out.map(async (_, i) => {
        const data = await readStaged(first + i).catch(() => null);
        if (!data) return;
        out[i] = { block: first + i, data, hash: isZero(data) ? null : blake3(data) };
        this.stats.stagedBlocks++;
      }));
    }
    for (let i = 0; i < count;) {
      if (out[i]) {
        i++;
        continue;
      }
      let end = i;
      while (end < count && !out[end]) end++;
      this.stats.fetches++;
      const fetched = await this.#options.fetch(first + i, end - i);
      this.stats.fetchedBlocks += fetched.length;
      fetched.forEach((b, k) => out[i + k] = b);
      i = end;
    }
    return out as FetchedBlock[];
  }

  #remember(block: FetchedBlock): void {
    const limit = this.#options.cacheBlocks ?? 1024;
    this.#cache.set(block.block, block);
    while (this.#cache.size > limit) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
  }

  /**
   * The generation is committed: from now on the replica has every block. Checks the blocks
   * served so far against the committed manifest (`entryOf` reads one entry) and returns
   * those that differ — a VM that read them saw other bytes than were committed (the source
   * changed after the final cut: its VM was not paused).
   */
  async markCommitted(entryOf: (block: number) => Promise<Uint8Array>): Promise<number[]> {
    this.#committed = true;
    this.#cache.clear();
    this.#committedSignal.notify();
    const differing: number[] = [];
    for (const [block, hash] of this.#served) {
      if (!constantTimeEqual(await entryOf(block), hash ?? ZERO_ENTRY)) differing.push(block);
    }
    this.#served.clear();
    return differing;
  }

  /** Frees memory. */
  close(): void {
    this.#committed = true;
    this.#committedSignal.notify();
    this.#cache.clear();
    this.#dirty.free();
  }
}
