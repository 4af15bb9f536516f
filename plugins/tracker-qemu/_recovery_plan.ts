import type { TrackerNames } from "./_names.ts";

/** A dirty bitmap on the tracked node, as `query-named-block-nodes` reports it. */
export interface NodeBitmap {
  name: string;
  /** Enabled: records writes. */
  recording: boolean;
  /** Kept in the image file (qcow2) across QEMU restarts. */
  persistent: boolean;
  /** In use by an export or a job: cannot be changed or removed. */
  busy: boolean;
  /** Not trustworthy: QEMU did not close the image cleanly (killed, host crash). */
  inconsistent: boolean;
}

/** One action of a QMP `transaction`. */
export interface TransactionAction {
  type: string;
  data: Record<string, unknown>;
}

/** What to do with the bitmaps presync finds when it attaches to a node. */
export interface RecoveryPlan {
  /** The bitmap that records the next generation's writes once `actions` ran. */
  active: string;
  /**
   * Removals of bitmaps that hold nothing needed (recorded, untrustworthy), run first: a
   * name removed and added again in one transaction would collide.
   */
  cleanup: TransactionAction[];
  /** One QMP transaction (possibly empty): atomic, so no write falls between bitmaps. */
  actions: TransactionAction[];
  /** True when no bitmap accounts for every write since the last recorded generation. */
  scan: boolean;
  /** Why (for the log and for tests). */
  reason: string;
  /** Bitmaps of unrecorded cuts folded into `active`. */
  merged: string[];
  /** Bitmaps removed: of recorded generations, or not trustworthy. */
  removed: string[];
}

/**
 * Decides how to resume tracking after presync (re)attaches to a node, from the bitmaps on
 * it (`node`) and `recordedGeneration`, the last generation the agent has durably recorded (its
 * pending generation, else its committed one). Pure.
 *
 * - A frozen bitmap of a generation ≤ recorded is in the agent's hands: removed.
 * - A frozen bitmap of a later generation was cut but never recorded (the agent died
 *   between the QMP transaction and recording the cut): its writes are folded into the
 *   new active bitmap, so they go with the next generation.
 * - With one trustworthy recording bitmap, the writes since the last cut are all known:
 *   it becomes (or is folded into) `presync-<volume>-<recorded+1>`. No scan.
 * - Without one (first start, a raw image's bitmap lost with a QEMU restart, a qcow2
 *   image's bitmap left inconsistent by a killed QEMU, or removed by someone else) nobody
 *   knows what was written: every bitmap of ours goes and a fresh one starts; the caller
 *   must scan the disk against its manifest. Never a silent full resend, never a miss.
 */
export function planRecovery(
  names: TrackerNames,
  node: string,
  bitmaps: NodeBitmap[],
  recordedGeneration: number,
  persistent: boolean,
): RecoveryPlan {
  const active = names.bitmap(recordedGeneration + 1);
  const ours = bitmaps
    .map((b) => ({ ...b, generation: names.generationOf(b.name) }))
    .filter((b): b is NodeBitmap & { generation: number } => b.generation !== null);
  const stale = ours.filter((b) =>
    b.inconsistent || (!b.recording && b.generation <= recordedGeneration)
  );
  const sources = ours.filter((b) => !stale.includes(b));
  const recording = sources.filter((b) => b.recording);
  const remove = (name: string): TransactionAction => ({
    type: "block-dirty-bitmap-remove",
    data: { node, name },
  });
  const add = (): TransactionAction => ({
    type: "block-dirty-bitmap-add",
    data: { node, name: active, persistent },
  });
  if (recording.length === 0) {
    const reason = ours.length === 0
      ? "no presync bitmap on the node (first start, or lost with a QEMU restart)"
      : ours.some((b) => b.inconsistent && (b.recording || b.generation > recordedGeneration))
      ? "the bitmap is inconsistent (QEMU was not shut down cleanly)"
      : "no bitmap records writes any more (removed or disabled by someone else)";
    return {
      active,
      cleanup: ours.map((b) => remove(b.name)),
      actions: [add()],
      scan: true,
      reason,
      merged: [],
      removed: ours.map((b) => b.name),
    };
  }
  const target = sources.find((b) => b.name === active);
  const folded = sources.filter((b) => b !== target).map((b) => b.name);
  const actions: TransactionAction[] = [];
  if (!target) actions.push(add());
  else if (!target.recording) {
    actions.push({ type: "block-dirty-bitmap-enable", data: { node, name: active } });
  }
  if (folded.length > 0) {
    actions.push({
      type: "block-dirty-bitmap-merge",
      data: { node, target: active, bitmaps: folded },
    });
  }
  actions.push(...folded.map(remove));
  return {
    active,
    cleanup: stale.map((b) => remove(b.name)),
    actions,
    scan: false,
    reason: folded.length > 0 || stale.length > 0 || !target
      ? `resumed from ${recording.map((b) => b.name).join(", ")}`
      : `resumed from ${active}`,
    merged: sources.filter((b) => !b.recording).map((b) => b.name),
    removed: stale.map((b) => b.name),
  };
}
