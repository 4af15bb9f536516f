import type { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { Signal } from "../wire/_signal.ts";
import type { Logger } from "../log.ts";

/** An evacuation's final generation of a volume, as its source announced it. */
export interface FinalGeneration {
  generation: number;
  /** Its blocks (owned by the finals). */
  dirty: Bitmap;
  /** Whether it is committed. */
  committed: boolean;
  /** Called once, when it is committed (after the replica's meta says so). */
  onCommitted: Set<() => void>;
}

/**
 * The destination's evacuation finals and export lock: the final generation each
 * evacuating source announced (`begin` with `final`), and which volumes are exported to a VM
 * here (`presync export --postcopy`), whose replica must not change but for that generation.
 */
export class EvacuationFinals {
  readonly #finals = new Map<string, FinalGeneration>();
  readonly #announced = new Signal();
  readonly #exported = new Set<string>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Records generation `generation` (set `dirty`, copied) as the final one of `name`. */
  record(name: string, generation: number, dirty: Bitmap): void {
    const known = this.#finals.get(name);
    if (known?.generation === generation) return;
    known?.dirty.free();
    this.#finals.set(name, {
      generation,
      dirty: dirty.clone(),
      committed: false,
      onCommitted: new Set(),
    });
    this.#log("info", "evacuation_final_generation", { volume: name, generation });
    this.#announced.notify();
  }

  /**
   * Checks a `begin` of `generation` with set `dirty` for `name`: while the volume is
   * exported, only its final generation may (still) arrive (a source restarted
   * mid-evacuation resends it without knowing it is final).
   *
   * @throws {PresyncError} `VOLUME_EXPORTED` (retryable) for any other generation
   */
  checkBegin(name: string, generation: number, dirty: Bitmap): void {
    const serving = this.#exported.has(name) ? this.#finals.get(name) : undefined;
    if (
      serving && (generation !== serving.generation || serving.committed ||
        !serving.dirty.equals(dirty))
    ) {
      throw new PresyncError(
        ErrorCode.VOLUME_EXPORTED,
        `volume ${name} is exported to a VM at the destination (presync export); its ` +
          `replica cannot change under it: stop the export to sync the volume again`,
        { retryable: true },
      );
    }
  }

  /** Records that `generation` of `name` committed: its waiters are told once. */
  committed(name: string, generation: number): void {
    const final = this.#finals.get(name);
    if (final?.generation !== generation || final.committed) return;
    final.committed = true;
    for (const notify of final.onCommitted) notify();
    final.onCommitted.clear();
  }

  /**
   * Waits until the source of `name` announces the final generation of an evacuation (or
   * returns the one already announced), then locks the volume for an export: from then on
   * only that generation may be received. Returns the final generation and the unlock.
   *
   * @throws {PresyncError} `VOLUME_EXPORTED` when the volume is exported already; the
   *   signal's reason when it aborts first
   */
  async exportFinal(
    name: string,
    signal: AbortSignal,
  ): Promise<{ final: FinalGeneration; unlock: () => void }> {
    const exportedAlready = () =>
      new PresyncError(ErrorCode.VOLUME_EXPORTED, `volume ${name} is exported already`);
    if (this.#exported.has(name)) throw exportedAlready();
    const aborted = new Promise<void>((resolve) =>
      signal.addEventListener("abort", () => resolve(), { once: true })
    );
    while (!this.#finals.has(name) && !signal.aborted) {
      await Promise.race([this.#announced.wait(), aborted]);
    }
    signal.throwIfAborted();
    if (this.#exported.has(name)) throw exportedAlready();
    const final = this.#finals.get(name)!;
    this.#exported.add(name);
    return { final, unlock: () => this.#exported.delete(name) };
  }
}
