/** A level-free wake-up: `wait()` resolves at the next `notify()`. */
export class Signal {
  #waiters: (() => void)[] = [];

  /** Resolves at the next {@linkcode Signal.notify}, or after `timeoutMs` when given. */
  wait(timeoutMs?: number): Promise<void> {
    if (timeoutMs === undefined) return new Promise((resolve) => this.#waiters.push(resolve));
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#waiters.push(done);
    });
  }

  /** Wakes every current waiter. */
  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
