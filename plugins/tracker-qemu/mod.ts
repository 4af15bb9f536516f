/**
 * The `qemu` tracker plugin: a running QEMU tracked over QMP.
 *
 * @module
 */

export { QemuTracker, type QemuTrackerOptions, type TrackerRecovery } from "./qemu_tracker.ts";
export { QemuCut } from "./qemu_cut.ts";
export { type NodeBitmap, planRecovery, type RecoveryPlan } from "./_recovery_plan.ts";
