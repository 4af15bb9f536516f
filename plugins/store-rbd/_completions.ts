/**
 * The aio completions of one image, as promises, without callbacks into JavaScript.
 *
 * A completion callback would run on librbd's own thread, and a thread-safe Deno callback
 * blocks that thread until the event loop has run it: every completion would stall librbd's
 * I/O processing for one hop to the event loop. Instead the image gets an eventfd
 * (`rbd_set_image_notification`): librbd counts finished requests on it and queues them; one
 * read of the eventfd, parked on a thread of Deno's blocking pool while requests are in flight,
 * wakes the event loop, which then collects every finished request at once
 * (`rbd_poll_io_events`). librbd never waits for JavaScript.
 *
 * @module
 */

import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { address, ceph, held, PointerOut } from "./_librbd.ts";
import { check } from "./rbd_error.ts";

/** `EVENT_TYPE_EVENTFD` of librbd.h; `EFD_CLOEXEC` of sys/eventfd.h. */
const EVENT_TYPE_EVENTFD = 2;
const EFD_CLOEXEC = 0o2000000;
/** How many finished requests one `rbd_poll_io_events` call collects at most. */
const POLL_BATCH = 64;
/** Failed reads of the eventfd in a row after which the queue gives up on it. */
const MAX_FAILED_READS = 100;

interface Settle {
  resolve(result: number): void;
  reject(err: PresyncError): void;
  /** The request's buffer, kept reachable while librbd reads or fills it. */
  keep?: ArrayBufferView;
}

/** The eventfd-driven completion queue of one open image. */
export class CompletionQueue {
  readonly #image: Deno.PointerObject;
  readonly #fd: number;
  readonly #pending = new Map<bigint, Settle>();
  readonly #counter = new Uint8Array(8);
  readonly #batch = new BigUint64Array(POLL_BATCH);
  readonly #batchBytes = new Uint8Array(this.#batch.buffer);
  readonly #out = new PointerOut();
  #reading = false;

  private constructor(image: Deno.PointerObject, fd: number) {
    this.#image = image;
    this.#fd = fd;
  }

  /** Creates the eventfd of `image` and tells librbd to report completions on it. */
  static open(image: Deno.PointerObject, label: string): CompletionQueue {
    const { rbd, libc } = ceph();
    const fd = libc.eventfd(0, EFD_CLOEXEC);
    if (fd < 0) {
      throw new PresyncError(
        ErrorCode.IO,
        `cannot create an eventfd for ${label}: out of file descriptors?`,
      );
    }
    const rc = rbd.rbd_set_image_notification(image, fd, EVENT_TYPE_EVENTFD);
    if (rc < 0) {
      libc.close(fd);
      check(rc, `setting up completion events of ${label}`);
    }
    return new CompletionQueue(image, fd);
  }

  /** Requests submitted and not yet collected. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * Creates a completion, hands it to `submit` (one `rbd_aio_*` call, which returns its own
   * result) and resolves with the request's return value once librbd has finished it, keeping
   * `keep` (the request's buffer) reachable until then. Resolves at once with `submit`'s
   * result when that is negative (nothing was queued).
   */
  submit(
    submit: (completion: Deno.PointerValue) => number,
    keep?: ArrayBufferView,
  ): Promise<number> {
    const { rbd } = ceph();
    check(rbd.rbd_aio_create_completion(null, null, this.#out.bytes), "creating an aio completion");
    const completion = this.#out.pointer;
    let rc: number;
    try {
      rc = submit(completion);
    } catch (err) {
      rbd.rbd_aio_release(completion);
      throw err;
    }
    if (rc < 0) {
      rbd.rbd_aio_release(completion);
      return Promise.resolve(rc);
    }
    const result = new Promise<number>((resolve, reject) =>
      this.#pending.set(address(completion), { resolve, reject, keep })
    );
    this.#watch().catch((err) => this.#failAll(String(err)));
    return result;
  }

  /** Keeps one read of the eventfd parked while requests are pending; collects after each. */
  async #watch(): Promise<void> {
    if (this.#reading) return;
    this.#reading = true;
    try {
      let failedReads = 0;
      while (this.#pending.size > 0) {
        const n = Number(await held(ceph().libc.read(this.#fd, this.#counter, 8n), this.#counter));
        // A read of an eventfd returns its 8-byte counter; anything else is a signal that
        // interrupted it (EINTR), or, over and over, a broken descriptor.
        failedReads = n === 8 ? 0 : failedReads + 1;
        if (failedReads > MAX_FAILED_READS) {
          this.#failAll(`${failedReads} reads of its eventfd in a row returned ${n}`);
        }
        this.#collect();
      }
    } finally {
      this.#reading = false;
    }
  }

  #collect(): void {
    const { rbd } = ceph();
    for (;;) {
      const n = rbd.rbd_poll_io_events(this.#image, this.#batchBytes, POLL_BATCH);
      if (n < 0) return this.#failAll(`rbd_poll_io_events returned ${n}`);
      for (let i = 0; i < n; i++) {
        const completion = Deno.UnsafePointer.create(this.#batch[i]);
        const result = Number(rbd.rbd_aio_get_return_value(completion));
        rbd.rbd_aio_release(completion);
        const key = address(completion);
        const settle = this.#pending.get(key);
        this.#pending.delete(key);
        settle?.resolve(result);
      }
      if (n < POLL_BATCH) return;
    }
  }

  /** Fails every pending request: the queue itself broke (a bug, never a cluster problem). */
  #failAll(why: string): void {
    const err = new PresyncError(
      ErrorCode.IO,
      `librbd completion queue failed (${why}): the outcome of ${this.#pending.size} requests ` +
        `is unknown; close the image and open it again`,
    );
    for (const settle of this.#pending.values()) settle.reject(err);
    this.#pending.clear();
  }

  /** Closes the eventfd; call after the image is closed (nothing is pending then). */
  close(): void {
    ceph().libc.close(this.#fd);
  }
}
