// The scan workers of a tracker: threads that each open the image themselves for a pass, read
// the pieces they are sent positionally into their own WASM memory and examine them there
// (`examinePiece`), so that reading, the zero check, the pre-filter and BLAKE3 run on every
// core and only verdicts come back to the pass. They live from the first pass that needs them
// to the tracker's close: starting them takes 0.2–0.4 s on a loaded 2-core machine, as long
// as a cut of a few GiB.

import { ErrorCode, type ErrorCode as Code, PresyncError } from "../../agent/errors.ts";
import type { Examined, PiecePlan } from "./_piece_examine.ts";

/** What every worker is set up with for one pass. */
export interface ScanWorkerSetup {
  /** The image file, opened read-only by each worker. */
  path: string;
  sizeBytes: number;
  blockSize: number;
  /** Bytes of the largest piece (each worker holds one piece at a time). */
  pieceBytes: number;
  /** The pre-filter secret (the key is expanded in each worker); null: no pre-filter. */
  secret: Uint8Array | null;
}

/** Messages to a worker: per pass, its setup, then pieces, then the end of the pass. */
export type ScanWorkerRequest =
  | { op: "begin"; setup: ScanWorkerSetup }
  | { op: "pieces"; id: number; plans: PiecePlan[] }
  | { op: "end" };

/** A worker's answer to a batch of pieces. */
export type ScanWorkerReply =
  | { op: "done"; id: number; examined: Examined[] }
  | { op: "failed"; id: number; code: Code; message: string; retryable: boolean };

interface Pending {
  resolve: (examined: Examined[]) => void;
  reject: (err: PresyncError) => void;
}

/**
 * `count` scan workers. Pieces sent to the same worker are examined in the order sent. A
 * piece that cannot be read or examined rejects with the worker's typed error (`IO` for the
 * image); a worker that dies rejects everything it was sent with `WORKER_FAILED`, and so does
 * every later piece sent to it ({@linkcode ScanWorkers.failed}: start new ones). `close()`
 * must be called: live workers keep the process running.
 */
export class ScanWorkers {
  readonly #workers: Worker[] = [];
  readonly #pending: Map<number, Pending>[] = [];
  readonly #dead: (PresyncError | null)[] = [];
  #nextId = 0;

  /** Starts `count` workers of `script` (the scan worker unless a test says otherwise). */
  constructor(count: number, script: URL = new URL("./_scan_worker.ts", import.meta.url)) {
    for (let index = 0; index < count; index++) {
      const worker = new Worker(script.href, { type: "module" });
      const pending = new Map<number, Pending>();
      worker.onmessage = (event: MessageEvent<ScanWorkerReply>) => {
        const reply = event.data;
        const waiting = pending.get(reply.id);
        pending.delete(reply.id);
        if (reply.op === "done") waiting?.resolve(reply.examined);
        else {
          const { code, message, retryable } = reply;
          waiting?.reject(new PresyncError(code, message, { retryable }));
        }
      };
      worker.onerror = (event) => {
        event.preventDefault();
        this.#fail(index, `a scan worker stopped: ${event.message}`);
      };
      worker.onmessageerror = () => this.#fail(index, "a scan worker sent an unreadable message");
      this.#workers.push(worker);
      this.#pending.push(pending);
      this.#dead.push(null);
    }
  }

  /** Number of workers. */
  get size(): number {
    return this.#workers.length;
  }

  /** Whether a worker died or the workers were closed: no piece can be examined any more. */
  get failed(): boolean {
    return this.#dead.some((dead) => dead !== null);
  }

  /** Sets every worker up for a pass: each opens the image (an error fails its pieces). */
  begin(setup: ScanWorkerSetup): void {
    for (const worker of this.#workers) {
      worker.postMessage({ op: "begin", setup } satisfies ScanWorkerRequest);
    }
  }

  /** Ends the pass: the workers close the image (pieces sent before are still examined). */
  end(): void {
    for (const worker of this.#workers) {
      worker.postMessage({ op: "end" } satisfies ScanWorkerRequest);
    }
  }

  #fail(index: number, why: string): void {
    const err = new PresyncError(
      ErrorCode.WORKER_FAILED,
      `${why}; the scan was stopped (what it settled is kept, the next cut scans the rest)`,
    );
    this.#dead[index] ??= err;
    for (const { reject } of this.#pending[index].values()) reject(err);
    this.#pending[index].clear();
    this.#workers[index].terminate();
  }

  /**
   * Has worker `index` (modulo the number of workers) read and examine the pieces of `plans`,
   * one after the other; resolves with what it found, in the same order. A piece that fails
   * fails the batch.
   */
  examine(index: number, plans: PiecePlan[]): Promise<Examined[]> {
    const at = index % this.#workers.length;
    const dead = this.#dead[at];
    if (dead) return Promise.reject(dead);
    const id = this.#nextId++;
    const result = new Promise<Examined[]>((resolve, reject) =>
      this.#pending[at].set(id, { resolve, reject })
    );
    // The entries are views of larger group reads: copies of them travel, not the groups.
    const transfer: ArrayBuffer[] = [];
    const own = (entries: Uint8Array) => {
      const copy = entries.slice();
      transfer.push(copy.buffer);
      return copy;
    };
    const sent = plans.map((plan) => ({
      ...plan,
      manifest: own(plan.manifest),
      table: plan.table && own(plan.table),
    }));
    this.#workers[at].postMessage(
      { op: "pieces", id, plans: sent } satisfies ScanWorkerRequest,
      transfer,
    );
    return result;
  }

  /** Stops the workers; pieces still pending reject with `SESSION_CLOSED`. Idempotent. */
  close(): void {
    const err = new PresyncError(ErrorCode.SESSION_CLOSED, "the scan workers were stopped");
    for (const [index, worker] of this.#workers.entries()) {
      if (this.#dead[index]) continue;
      this.#dead[index] = err;
      for (const { reject } of this.#pending[index].values()) reject(err);
      this.#pending[index].clear();
      worker.terminate();
    }
  }
}
