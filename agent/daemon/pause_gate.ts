/**
 * Holds a volume's sending while it is paused (`presync pause`); tracking and cutting go on.
 * `wait` resolves at once when open, else at `open()` or when `until` settles (the session
 * ended: the sender must not hold up a reconnect or the agent's exit).
 */
export class PauseGate {
  #closed: Promise<void> | null = null;
  #open: (() => void) | null = null;

  /** Whether sending is paused. */
  get paused(): boolean {
    return this.#closed !== null;
  }

  /** Pauses sending at the next block. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = new Promise((resolve) => this.#open = resolve);
  }

  /** Lets sending go on. Idempotent. */
  open(): void {
    this.#open?.();
    this.#open = null;
    this.#closed = null;
  }

  /** Resolves when sending may go on, or once `until` settles, whichever comes first. */
  wait(until: Promise<unknown>): Promise<void> {
    if (!this.#closed) return Promise.resolve();
    return Promise.race([this.#closed, until.then(() => {}, () => {})]);
  }
}
