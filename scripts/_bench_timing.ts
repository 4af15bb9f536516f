/**
 * Timing helpers shared by the benchmark scripts: medians, in-process timing and timing of
 * whole external commands (for side-by-side runs against CLI baselines).
 *
 * @module
 */

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Milliseconds one call of `fn` takes. */
export function timeMs(fn: () => unknown): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

/**
 * Runs `argv` `runs` times after one warm-up run, output discarded (or fed `stdin` bytes),
 * and returns the wall milliseconds of each counted run. Throws when a run fails.
 */
export async function timeCommand(
  argv: string[],
  runs: number,
  stdin?: Uint8Array,
): Promise<number[]> {
  const once = async (): Promise<number> => {
    const start = performance.now();
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: stdin ? "piped" : "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    if (stdin) {
      const writer = child.stdin.getWriter();
      await writer.write(stdin);
      await writer.close();
    }
    const status = await child.output();
    const elapsed = performance.now() - start;
    if (!status.success) {
      throw new Error(`${argv.join(" ")} failed: ${new TextDecoder().decode(status.stderr)}`);
    }
    return elapsed;
  };
  await once();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await once());
  return times;
}
