/** A level-free wake-up: `wait()` resolves at the next `notify()`. */
export class Signal {
  #waiters: (() => void)[] = [];

  /** Resolves at the next {@linkcode Signal.notify}. */
  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Wakes every current waiter. */
  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
