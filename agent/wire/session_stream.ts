import { ErrorCode, PresyncError } from "../errors.ts";
import { Signal } from "./_signal.ts";
import type { Priority } from "./frame.ts";
import { ReceiveWindow } from "./receive_window.ts";

/** What a stream needs from its session (implemented by the session; not public API). */
export interface StreamHost {
  /** Sends `chunk` as DATA frames, waiting for window and queue room. */
  writeData(stream: SessionStream, chunk: Uint8Array): Promise<void>;
  /** Sends the stream's FIN; resolves once it is on the transport. */
  finish(stream: SessionStream): Promise<void>;
  /** Resets the stream in both directions (RESET to the peer). */
  reset(stream: SessionStream, reason: unknown): void;
  /** Changes the stream's receive window (see `SessionStream.setReceiveWindow`). */
  resizeReceiveWindow(stream: SessionStream, bytes: number): void;
  /** The application consumed `n` received bytes: credit the windows. */
  consumed(stream: SessionStream, n: number): void;
}

/**
 * One stream of a session: an ordered, flow-controlled byte stream in each direction, with a
 * priority fixed at open. `readable` delivers the peer's bytes and ends at its FIN;
 * `writable` sends, with backpressure (a `write` waits while the peer's window is used up or
 * the stream already has `maxQueuedBytesPerStream` queued), and `close()` sends FIN.
 * Cancelling the readable or aborting the writable resets the whole stream.
 *
 * @example
 * ```ts ignore
 * const stream = session.openStream(Priority.BULK);
 * const writer = stream.writable.getWriter();
 * await writer.write(new Uint8Array([1, 2, 3]));
 * await writer.close();
 * ```
 */
export class SessionStream {
  /** Stream id (odd: opened by the client; even: by the server). */
  readonly id: number;
  /** 0 control, 1 on-demand, 2 bulk, 3 memory. */
  readonly priority: Priority;
  /** Bytes from the peer. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer. */
  readonly writable: WritableStream<Uint8Array>;

  /** @internal Send credit left on this stream (the peer's window). */
  sendCredit: number;
  /** @internal Receive window of this stream. */
  readonly receiveWindow: ReceiveWindow;
  /** @internal Wakes writers waiting for credit or queue room, and the reader. */
  readonly signal: Signal = new Signal();
  /** @internal True once FIN was sent. */
  sentFin = false;
  /** @internal True once the peer's FIN arrived. */
  receivedFin = false;
  /** @internal Rejects a pending `close()` when the stream fails first. */
  onFailed: ((error: PresyncError) => void) | undefined;
  /** @internal Set when the stream failed or was reset. */
  error: PresyncError | undefined;

  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  readonly #host: StreamHost;

  /** @internal Streams are made by the session: `openStream` / `acceptStream`. */
  constructor(
    host: StreamHost,
    id: number,
    priority: Priority,
    sendCredit: number,
    receiveWindowBytes: number,
  ) {
    this.#host = host;
    this.id = id;
    this.priority = priority;
    this.sendCredit = sendCredit;
    this.receiveWindow = new ReceiveWindow(receiveWindowBytes);
    this.readable = new ReadableStream<Uint8Array>({
      pull: (controller) => this.#pull(controller),
      cancel: (reason) => host.reset(this, reason),
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => {
        if (!(chunk instanceof Uint8Array)) {
          throw new PresyncError(
            ErrorCode.INVALID_ARGUMENT,
            `stream ${id} takes Uint8Array chunks: received ${typeof chunk}`,
          );
        }
        return host.writeData(this, chunk);
      },
      close: () => host.finish(this),
      abort: (reason) => host.reset(this, reason),
    });
  }

  /**
   * Sets the receive window this side grants the peer on this stream (bytes it may have in
   * flight): smaller than the session's default, it keeps the peer's bulk data from queueing
   * in the network ahead of more urgent streams. Takes effect as the peer's data arrives.
   */
  setReceiveWindow(bytes: number): void {
    this.#host.resizeReceiveWindow(this, bytes);
  }

  /** Resets the stream in both directions: pending reads and writes fail with `STREAM_RESET`. */
  reset(): void {
    this.#host.reset(this, "reset by the application");
  }

  /** @internal Bytes received and not yet read by the application. */
  get bufferedBytes(): number {
    return this.#queuedBytes;
  }

  /** @internal Delivers received bytes. */
  deliver(bytes: Uint8Array): void {
    if (bytes.length > 0) {
      this.#queue.push(bytes);
      this.#queuedBytes += bytes.length;
    }
    this.signal.notify();
  }

  /** @internal Fails the stream; returns how many buffered bytes were discarded. */
  fail(error: PresyncError): number {
    if (this.error === undefined) this.error = error;
    const dropped = this.#queuedBytes;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.onFailed?.(this.error);
    this.signal.notify();
    return dropped;
  }

  async #pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    while (this.#queue.length === 0 && !this.receivedFin && this.error === undefined) {
      await this.signal.wait();
    }
    const chunk = this.#queue.shift();
    if (chunk !== undefined) {
      this.#queuedBytes -= chunk.length;
      controller.enqueue(chunk);
      this.#host.consumed(this, chunk.length);
    } else if (this.error !== undefined) {
      controller.error(this.error);
    } else {
      controller.close();
    }
  }
}
