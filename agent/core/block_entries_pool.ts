import { blockEntries } from "./hash_blocks.ts";

/** A piece handed back by {@linkcode BlockEntriesPool.compute}. */
export interface PoolResult {
  /** Manifest entries of the piece's blocks (see `blockEntries`). */
  entries: Uint8Array;
  /** The piece's buffer, given back for reuse. */
  buffer: ArrayBuffer;
}

/**
 * Computes manifest entries on every core: pieces go to WebAssembly workers with their
 * buffers transferred, not copied. With one worker or none it computes in place.
 * `close()` must be called: live workers keep the process running.
 */
export class BlockEntriesPool {
  readonly #workers: Worker[] = [];
  readonly #idle: Worker[] = [];
  readonly #queue: (() => void)[] = [];
  readonly #pending = new Map<
    number,
    { resolve: (r: PoolResult) => void; reject: (e: unknown) => void }
  >();
  #nextId = 0;

  /** Starts `size` workers (default: one per core). */
  constructor(size = navigator.hardwareConcurrency) {
    if (size <= 1) return;
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL("./_hash_worker.ts", import.meta.url).href, {
        type: "module",
      });
      worker.onmessage = (event: MessageEvent<{ id: number } & PoolResult>) => {
        const { id, entries, buffer } = event.data;
        this.#pending.get(id)?.resolve({ entries, buffer });
        this.#pending.delete(id);
        this.#release(worker);
      };
      worker.onerror = (event) => {
        event.preventDefault();
        for (const { reject } of this.#pending.values()) {
          reject(new Error(`hash worker failed: ${event.message}`));
        }
        this.#pending.clear();
      };
      this.#workers.push(worker);
      this.#idle.push(worker);
    }
  }

  /** Number of pieces worth keeping in flight. */
  get parallelism(): number {
    return Math.max(1, this.#workers.length);
  }

  #release(worker: Worker): void {
    this.#idle.push(worker);
    this.#queue.shift()?.();
  }

  /**
   * Entries of the first `length` bytes of `buffer` in `blockSize` blocks. The buffer is
   * transferred to a worker: do not touch it until it is handed back in the result.
   */
  async compute(buffer: ArrayBuffer, length: number, blockSize: number): Promise<PoolResult> {
    if (this.#workers.length === 0) {
      return { entries: blockEntries(new Uint8Array(buffer, 0, length), blockSize), buffer };
    }
    while (this.#idle.length === 0) await new Promise<void>((resolve) => this.#queue.push(resolve));
    const worker = this.#idle.pop()!;
    const id = this.#nextId++;
    const result = new Promise<PoolResult>((resolve, reject) =>
      this.#pending.set(id, { resolve, reject })
    );
    worker.postMessage({ id, buffer, length, blockSize }, [buffer]);
    return await result;
  }

  /** Stops the workers. Idempotent. */
  close(): void {
    for (const worker of this.#workers.splice(0)) worker.terminate();
    this.#idle.length = 0;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
