import { ErrorCode, PresyncError } from "../errors.ts";

/**
 * The receive side of one flow-control window (a stream's or the connection's): how much the
 * peer may still send, and when to grant more. Pure: the session sends the WINDOW frames.
 *
 * @example
 * ```ts
 * import { ReceiveWindow } from "./receive_window.ts";
 * const w = new ReceiveWindow(1000);
 * w.receive(600, "stream 1");
 * console.assert(w.consume(600) === 600); // over a quarter of the window consumed: grant it
 * ```
 */
export class ReceiveWindow {
  #size: number;
  #allowance: number;
  #unacked = 0;

  /** A window of `sizeBytes`, all of it granted at the start (announced in HELLO). */
  constructor(sizeBytes: number) {
    this.#size = sizeBytes;
    this.#allowance = sizeBytes;
  }

  /** Bytes the peer may still send before it must wait for a WINDOW frame. */
  get allowance(): number {
    return this.#allowance;
  }

  /**
   * Accounts `n` received bytes.
   *
   * @throws {PresyncError} `FLOW_CONTROL` when the peer sent more than it was granted
   */
  receive(n: number, what: string): void {
    if (n > this.#allowance) {
      throw new PresyncError(
        ErrorCode.FLOW_CONTROL,
        `the peer sent ${n} bytes on ${what} with only ${this.#allowance} bytes of window ` +
          `left: it ignores flow control, so the session is closed`,
      );
    }
    this.#allowance -= n;
  }

  /**
   * Accounts `n` bytes the application consumed (or that were discarded); returns the
   * increment to send in a WINDOW frame now, or 0 to wait for more (batched at a quarter of
   * the window, so the peer keeps at least three quarters of it in flight).
   * After a shrink, nothing is granted until the peer's allowance is below the new size.
   */
  consume(n: number): number {
    this.#unacked += n;
    if (this.#unacked < this.#size / 4) return 0;
    const increment = Math.min(this.#unacked, this.#size - this.#allowance);
    // Consumed bytes not granted back are forgiven: the peer still holds at least a window.
    this.#unacked = 0;
    if (increment <= 0) return 0;
    this.#allowance += increment;
    return increment;
  }

  /**
   * Changes the window's size; returns the increment to grant now (growing), or 0
   * (shrinking: the peer uses up what it holds, and is granted less from then on).
   */
  resize(sizeBytes: number): number {
    const increment = Math.max(0, sizeBytes - Math.max(this.#size, this.#allowance));
    this.#size = sizeBytes;
    this.#allowance += increment;
    return increment;
  }

  /** The window's size now. */
  get size(): number {
    return this.#size;
  }
}
