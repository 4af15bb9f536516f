// @ts-types="./_cli_progress.d.ts"
import cliProgress, { type MultiBar, type SingleBar } from "cli-progress";
import process from "node:process";
import { describeProgress, DrainProgress } from "./_progress.ts";

/** Steps of a bar: the fraction is shown to a tenth of a percent. */
const STEPS = 1000;

/**
 * Progress bars on a terminal, one line per key (a volume), drawn with `cli-progress` on
 * stderr; log lines go above them through {@linkcode ProgressBoard.print} so the two never
 * overwrite each other. Only for a terminal: off a terminal, progress is a log event.
 */
export class ProgressBoard {
  readonly #multi: MultiBar;
  readonly #stream: { write(text: string): unknown };
  readonly #bars = new Map<string, { bar: SingleBar; progress: DrainProgress }>();
  #stopped = false;

  constructor(stream: { write(text: string): unknown } = process.stderr) {
    this.#stream = stream;
    this.#multi = new cliProgress.MultiBar({
      stream,
      format: "{label} [{bar}] {percentage}% {detail}",
      barsize: 30,
      hideCursor: false,
      clearOnComplete: false,
      autopadding: true,
      fps: 4,
    }, cliProgress.Presets.legacy);
  }

  /** Shows (or updates) the bar of `key`: `remainingBytes` of about `totalBytes` to go. */
  show(key: string, label: string, remainingBytes: number, totalBytes: number): void {
    if (this.#stopped) return;
    let entry = this.#bars.get(key);
    if (!entry) {
      const bar = this.#multi.create(STEPS, 0, { label, detail: "" });
      entry = { bar, progress: new DrainProgress() };
      this.#bars.set(key, entry);
    }
    const snapshot = entry.progress.update(remainingBytes, totalBytes, performance.now());
    entry.bar.update(Math.round(snapshot.fraction * STEPS), {
      label,
      detail: describeProgress(snapshot),
    });
  }

  /** Removes the bar of `key` (its work ended), if shown. */
  remove(key: string): void {
    const entry = this.#bars.get(key);
    if (!entry) return;
    this.#bars.delete(key);
    this.#multi.remove(entry.bar);
  }

  /**
   * Prints `line` above the bars, or plainly when none is shown: `cli-progress` holds logged
   * lines until its next redraw, and with no bar there is none (an idle agent's warnings
   * would wait for the next generation).
   */
  print(line: string): void {
    if (this.#stopped || this.#bars.size === 0) this.#stream.write(`${line}\n`);
    else this.#multi.log(`${line}\n`);
  }

  /** Draws the last state, prints pending lines and stops redrawing. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#multi.update();
    this.#multi.stop();
  }
}
