import type { Logger } from "../log.ts";
import { DrainProgress } from "./_progress.ts";
import type { ProgressBoard } from "./_progress_board.ts";

/** What the progress reporter reads of each volume's status. */
export interface SendingStatus {
  name: string;
  state: string;
  committedGeneration: number;
  generationBytes: number;
  /** The part of the generation not yet acknowledged. */
  generationPendingBytes: number;
}

/** How often a progress log event is written per volume, off a terminal. */
export const PROGRESS_LOG_INTERVAL_MS = 10_000;

/**
 * Reports each volume's sending progress once a second, while it sends or evacuates: as one
 * bar per volume on `board` (a terminal), else as a `progress` log event every
 * {@linkcode PROGRESS_LOG_INTERVAL_MS} (a JSON object in `--log-format json`). Returns the
 * function that stops it.
 */
export function reportProgress(
  status: () => SendingStatus[],
  log: Logger,
  board: ProgressBoard | null,
): () => void {
  // Per volume: the bar's key (volume and generation); off a terminal, the progress and when
  // it was last logged (on a terminal the board keeps the progress).
  const shown = new Map<
    string,
    { key: string; progress: DrainProgress | null; loggedMs: number }
  >();
  const tick = () => {
    const now = performance.now();
    for (const v of status()) {
      const sending = (v.state === "sending" || v.state === "evacuating") && v.generationBytes > 0;
      const generation = v.committedGeneration + 1;
      const key = `${v.name} generation ${generation}`;
      const current = shown.get(v.name);
      if (current && (!sending || current.key !== key)) {
        board?.remove(current.key);
        shown.delete(v.name);
      }
      if (!sending) continue;
      let entry = shown.get(v.name);
      if (!entry) {
        entry = { key, progress: board ? null : new DrainProgress(), loggedMs: -Infinity };
        shown.set(v.name, entry);
      }
      if (board) {
        board.show(key, key, v.generationPendingBytes, v.generationBytes);
        continue;
      }
      const p = entry.progress!.update(v.generationPendingBytes, v.generationBytes, now);
      if (now - entry.loggedMs < PROGRESS_LOG_INTERVAL_MS) continue;
      entry.loggedMs = now;
      log("info", "progress", {
        volume: v.name,
        generation,
        state: v.state,
        remainingBytes: p.remainingBytes,
        totalBytes: p.totalBytes,
        percent: Math.round(p.fraction * 1000) / 10,
        etaSeconds: p.etaSeconds === null ? null : Math.round(p.etaSeconds),
      });
    }
  };
  const timer = setInterval(tick, 1000);
  return () => {
    clearInterval(timer);
    for (const { key } of shown.values()) board?.remove(key);
    board?.stop();
  };
}
