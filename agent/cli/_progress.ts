/**
 * Progress of long work (a first sync, an evacuation): a bar with percentage, bytes and ETA
 * redrawn in place on a terminal; a plain line every few seconds otherwise (logs, pipes).
 */
export class Progress {
  readonly #label: string;
  readonly #tty: boolean;
  readonly #started = performance.now();
  #lastPlain = -Infinity;
  #drawn = false;

  constructor(label: string, tty = Deno.stderr.isTerminal()) {
    this.#label = label;
    this.#tty = tty;
  }

  /** Reports `done` of `total` bytes. */
  update(done: number, total: number): void {
    const now = performance.now();
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const elapsed = (now - this.#started) / 1000;
    const eta = fraction > 0.01 ? elapsed * (1 - fraction) / fraction : NaN;
    const text = `${this.#label} ${(fraction * 100).toFixed(0).padStart(3)}% ` +
      `${mib(done)}/${mib(total)} MiB` + (Number.isFinite(eta) ? `, ETA ${eta.toFixed(0)} s` : "");
    if (this.#tty) {
      const width = 30;
      const filled = Math.round(fraction * width);
      const bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
      Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[2K${bar} ${text}`));
      this.#drawn = true;
    } else if (now - this.#lastPlain >= 5000) {
      this.#lastPlain = now;
      console.error(text);
    }
  }

  /** Ends the bar (moves to a new line on a terminal). */
  done(): void {
    if (this.#tty && this.#drawn) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}
