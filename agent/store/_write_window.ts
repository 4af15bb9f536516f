/**
 * Keeps up to `limit` writes of an image in flight (the image's `writeWindow`): `add` waits
 * while the window is full, `drain` waits for all and throws the first failure. A failed
 * write makes every later `add` throw it too, so the caller stops at once.
 */
export class WriteWindow {
  readonly #limit: number;
  readonly #inflight = new Set<Promise<void>>();
  #failure: { error: unknown } | null = null;

  constructor(limit: number) {
    this.#limit = Math.max(1, limit);
  }

  /** Starts `write` once a slot is free. */
  async add(write: () => Promise<void>): Promise<void> {
    while (this.#inflight.size >= this.#limit) await Promise.race(this.#inflight);
    this.#throwFailure();
    const running: Promise<void> = write().then(
      () => void this.#inflight.delete(running),
      (error) => {
        this.#failure ??= { error };
        this.#inflight.delete(running);
      },
    );
    this.#inflight.add(running);
  }

  /** Waits for every write started; throws the first that failed. */
  async drain(): Promise<void> {
    await this.settle();
    this.#throwFailure();
  }

  /** Waits for every write started, failed or not (after an error, before giving up). */
  async settle(): Promise<void> {
    await Promise.all(this.#inflight);
  }

  #throwFailure(): void {
    if (this.#failure) throw this.#failure.error;
  }
}
