import { BulkWindowController } from "../wire/bulk_window_controller.ts";

/** How often a narrowed window follows the measured rate, ms. */
const NARROW_INTERVAL_MS = 250;

/** The bulk stream of a volume whose window is narrowed. */
export interface NarrowedStream {
  /** Measures a round trip on the stream's session, ms (rejects once it ended). */
  ping(): Promise<number>;
  /** The session's default stream window, bytes: the widest a stream gets. */
  readonly defaultWindowBytes: number;
  /** Sets the stream's receive window (throws once the stream ended). */
  setReceiveWindow(bytes: number): void;
  /** Bytes received on the stream so far. */
  receivedBytes(): number;
  /** Whether it still syncs its volume. */
  current(): boolean;
}

/**
 * Which volumes' bulk streams run on a narrow receive window, and until when, across
 * reconnects: each such stream gets a {@linkcode BulkWindowController} and a loop that
 * samples its rate and RTT and applies the window, until the narrowing ends or the stream
 * stops syncing; then it gets the session's default window again.
 */
export class BulkNarrowing {
  readonly #until = new Map<string, number>();
  readonly #running = new WeakSet<NarrowedStream>();

  /** Keeps `name`'s bulk stream narrow until `untilMs` (`performance.now()` clock). */
  narrow(name: string, untilMs: number, stream?: NarrowedStream): void {
    this.#until.set(name, Math.max(this.#until.get(name) ?? 0, untilMs));
    if (stream) this.attach(name, stream);
  }

  /** Gives `name`'s bulk stream the session's default window again. */
  widen(name: string): void {
    this.#until.delete(name);
  }

  /** A new stream syncs `name`: narrowed at once when `name` is to be narrow. */
  attach(name: string, stream: NarrowedStream): void {
    if (!this.#active(name, stream) || this.#running.has(stream)) return;
    this.#running.add(stream);
    this.#loop(name, stream);
  }

  #active(name: string, stream: NarrowedStream): boolean {
    return stream.current() && performance.now() < (this.#until.get(name) ?? 0);
  }

  async #loop(name: string, stream: NarrowedStream): Promise<void> {
    const set = (bytes: number) => {
      try {
        stream.setReceiveWindow(Math.min(bytes, stream.defaultWindowBytes));
      } catch {
        // The stream ended; nothing to narrow.
      }
    };
    const controller = new BulkWindowController();
    set(controller.startBytes);
    controller.update(stream.receivedBytes(), performance.now(), Infinity);
    while (this.#active(name, stream)) {
      const rttMs = await stream.ping().catch(() => null);
      if (rttMs === null) break;
      await new Promise((resolve) => setTimeout(resolve, NARROW_INTERVAL_MS));
      const window = controller.update(stream.receivedBytes(), performance.now(), rttMs);
      if (this.#active(name, stream)) set(window);
    }
    this.#running.delete(stream);
    set(stream.defaultWindowBytes);
  }
}
