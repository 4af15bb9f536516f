/**
 * PING bookkeeping of one session: the ids of PINGs in flight, who waits for each PONG, and
 * the smoothed round-trip time (weight 1/8, as TCP's SRTT). Pure: the session sends the
 * frames and passes in the clock.
 *
 * @example
 * ```ts
 * import { PingTracker } from "./ping_tracker.ts";
 * const pings = new PingTracker();
 * let measured = 0;
 * const id = pings.start(100, (ms) => (measured = ms));
 * pings.ack(id, 130);
 * console.assert(measured === 30 && pings.srttMs === 30);
 * ```
 */
export class PingTracker {
  readonly #pending = new Map<bigint, { startMs: number; resolve: (ms: number) => void }>();
  #counter = 0n;
  #srttMs: number | undefined;

  /** Smoothed round-trip time in ms, or undefined before the first answered PING. */
  get srttMs(): number | undefined {
    return this.#srttMs;
  }

  /** A fresh PING id nobody waits for (a keepalive PING). */
  nextId(): bigint {
    return this.#counter++;
  }

  /** A fresh PING id sent at `nowMs`; `resolve` gets the round trip in ms when it is answered. */
  start(nowMs: number, resolve: (ms: number) => void): bigint {
    const id = this.#counter++;
    this.#pending.set(id, { startMs: nowMs, resolve });
    return id;
  }

  /** The PONG for `id` arrived at `nowMs`; unknown ids (keepalive PINGs) are ignored. */
  ack(id: bigint, nowMs: number): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    const rtt = nowMs - pending.startMs;
    this.#srttMs = this.#srttMs === undefined ? rtt : this.#srttMs + (rtt - this.#srttMs) / 8;
    pending.resolve(rtt);
  }
}
