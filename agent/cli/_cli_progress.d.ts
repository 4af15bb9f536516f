// The part of cli-progress 3.12 that presync uses (the package ships no types; @types/cli-progress
// would pull in @types/node, whose globals change Deno's, e.g. setTimeout's return type).

/** A line of a {@linkcode MultiBar}. */
export interface SingleBar {
  update(value: number, payload?: Record<string, unknown>): void;
}

/** Several bars redrawn together on a terminal stream; `log` prints above them. */
export class MultiBar {
  constructor(options: Record<string, unknown>, preset?: unknown);
  create(total: number, start: number, payload?: Record<string, unknown>): SingleBar;
  remove(bar: SingleBar): boolean;
  update(): void;
  log(text: string): void;
  stop(): void;
}

/** Bar styles. */
export const Presets: { legacy: unknown };

declare const cliProgress: { MultiBar: typeof MultiBar; Presets: typeof Presets };
export default cliProgress;
