import { type Priority, PRIORITY_CLASSES, PRIORITY_ORDER } from "./frame.ts";

/** A frame waiting to be sent: its bytes (tag not yet sealed) and what to do once sent. */
export interface QueuedFrame {
  /** The encoded frame; the session seals its tag when it is sent. */
  bytes: Uint8Array;
  /** DATA payload bytes in it (for accounting), 0 for other frames. */
  dataBytes: number;
  /** Called once the transport has taken the bytes. */
  onSent?: () => void;
}

/** The class of session frames (WINDOW, PING, RESET, GOAWAY), ahead of every priority. */
export const SESSION_CLASS = -1;

/**
 * Decides which frame goes next: session frames first, then priority 0 (control), 1
 * (on-demand), 3 (memory), 2 (bulk), strictly; within a priority, streams take turns one frame each, so
 * bulk streams share fairly and cannot starve control. Pure (no I/O, no timers).
 *
 * @example
 * ```ts
 * import { FrameScheduler } from "./scheduler.ts";
 * const s = new FrameScheduler();
 * s.enqueue(1, 2, { bytes: new Uint8Array([1]), dataBytes: 1 });
 * s.enqueue(3, 0, { bytes: new Uint8Array([3]), dataBytes: 1 });
 * console.assert(s.next()?.bytes[0] === 3); // control overtakes queued bulk
 * ```
 */
export class FrameScheduler {
  #session: QueuedFrame[] = [];
  // Per priority, stream id → its queue; Map order is the round-robin order.
  #classes: Map<number, QueuedFrame[]>[] = Array.from(
    { length: PRIORITY_CLASSES },
    () => new Map(),
  );
  #queuedBytes = new Map<number, number>();
  #queuedFrames = new Array<number>(PRIORITY_CLASSES).fill(0);

  /** Queues a session frame (sent before any stream frame, in FIFO order). */
  enqueueSession(item: QueuedFrame): void {
    this.#session.push(item);
  }

  /** Queues a frame of stream `streamId` with `priority`. */
  enqueue(streamId: number, priority: Priority, item: QueuedFrame): void {
    const queues = this.#classes[priority];
    const queue = queues.get(streamId);
    if (queue) queue.push(item);
    else queues.set(streamId, [item]);
    this.#queuedBytes.set(streamId, (this.#queuedBytes.get(streamId) ?? 0) + item.bytes.length);
    this.#queuedFrames[priority]++;
  }

  /** Removes and returns the next frame to send, or undefined when nothing waits. */
  next(): QueuedFrame | undefined {
    const head = this.#session.shift();
    if (head) return head;
    for (const priority of PRIORITY_ORDER) {
      const queues = this.#classes[priority];
      for (const [streamId, queue] of queues) {
        const item = queue.shift()!;
        queues.delete(streamId);
        if (queue.length > 0) queues.set(streamId, queue); // to the back of the turn order
        const left = this.#queuedBytes.get(streamId)! - item.bytes.length;
        if (left === 0) this.#queuedBytes.delete(streamId);
        else this.#queuedBytes.set(streamId, left);
        this.#queuedFrames[priority]--;
        return item;
      }
    }
    return undefined;
  }

  /** Bytes of stream `streamId` waiting to be sent. */
  queuedBytes(streamId: number): number {
    return this.#queuedBytes.get(streamId) ?? 0;
  }

  /** Frames waiting in priority class `priority`. */
  queuedFrames(priority: Priority): number {
    return this.#queuedFrames[priority];
  }

  /** True when no frame waits. */
  get empty(): boolean {
    return this.#session.length === 0 && this.#queuedBytes.size === 0;
  }

  /** Drops every queued frame of a stream (after a reset); returns them. */
  drop(streamId: number, priority: Priority): QueuedFrame[] {
    const queue = this.#classes[priority].get(streamId) ?? [];
    this.#classes[priority].delete(streamId);
    this.#queuedBytes.delete(streamId);
    this.#queuedFrames[priority] -= queue.length;
    return queue;
  }
}
