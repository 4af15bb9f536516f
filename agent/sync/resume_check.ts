import { ErrorCode, PresyncError } from "../errors.ts";
import type { SourceState } from "../source/source_state.ts";

/** How to start over when the two sides' generations cannot be reconciled. */
function resyncAdvice(state: Pick<SourceState, "dir" | "identity">): string {
  const name = state.identity.name;
  return `Nothing was sent. To resync the volume in full: stop the agent, remove ${state.dir} ` +
    `and the destination's replica of ${name} (\`presync delete ${name} --yes\` there), then ` +
    `start the agent again.`;
}

/**
 * Checks that the source's state can resume against a destination whose replica is at
 * `destinationGeneration`: equal to the source's committed generation, or to its pending
 * one (committed before the acknowledgement came back). Pure.
 *
 * @throws {PresyncError} `SOURCE_STATE_STALE` when the destination is further than the source
 *   knows (a state directory restored from an old backup, or copied from another agent);
 *   `GENERATION_MISMATCH` when it is behind (a replica re-created or restored)
 */
export function assertResumable(
  state: Pick<SourceState, "dir" | "identity" | "committedGeneration" | "pending">,
  destinationGeneration: number,
): void {
  const committed = state.committedGeneration;
  const pending = state.pending?.generation;
  if (destinationGeneration === committed || destinationGeneration === pending) return;
  const name = state.identity.name;
  if (destinationGeneration > committed) {
    throw new PresyncError(
      ErrorCode.SOURCE_STATE_STALE,
      `the destination's replica of ${name} is at generation ${destinationGeneration} but this ` +
        `agent's state (${state.dir}) records generation ${committed}` +
        (pending === undefined ? "" : ` with ${pending} in flight`) +
        `: the state is older than the replica (restored from a backup, or copied from ` +
        `another agent?), so it cannot tell which blocks the destination holds. ` +
        resyncAdvice(state),
    );
  }
  throw new PresyncError(
    ErrorCode.GENERATION_MISMATCH,
    `the destination's replica of ${name} is at generation ${destinationGeneration} but this ` +
      `agent's state (${state.dir}) records generation ${committed} as committed there: the ` +
      `replica was re-created or restored from an older copy. ` + resyncAdvice(state),
  );
}
