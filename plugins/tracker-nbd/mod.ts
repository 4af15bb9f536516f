/**
 * The `nbd` tracker plugin: presync serves the VM's disk over NBD and learns every write
 * as it happens.
 *
 * Glossary:
 * - **live bitmap**: blocks written since the last cut; every WRITE, WRITE_ZEROES and TRIM
 *   sets its blocks' bits before the bytes reach the image.
 * - **cut**: the moment the live bitmap is swapped for an empty one. The cut waits for the
 *   writes in flight to land (on the local disk, never on the network), so the swapped set
 *   is exactly the writes before that moment.
 * - **copy-before-write (CBW)**: while a cut is being sent, the first write to one of its
 *   blocks copies the block's old content aside; the sender reads that copy, so the
 *   generation is the image *as of the cut* (crash-consistent), never a mix.
 * - **preserved block / spill**: such a copy; up to `preserveMemoryBytes` (default 64 MiB)
 *   they stay in memory, beyond that they are appended to `<stateDir>/cbw-<n>.spill`, which
 *   is deleted when the cut is released.
 * - **FLUSH**: answered only after the image is fsynced (FUA writes likewise).
 *
 * Starting: `presync agent --volume NAME=IMAGE --tracker nbd --nbd-listen ADDR` where ADDR
 * is `HOST:PORT` or `unix:PATH` ({@linkcode parseNbdAddress}); the export name is the
 * volume name, e.g. `qemu-system-x86_64 -drive
 * file=nbd+unix:///NAME?socket=PATH,format=raw,cache=none`.
 *
 * - **worker**: the agent runs the tracker in a Worker ({@linkcode WorkerNbdTracker}): the
 *   VM's NBD server, live bitmap and copy-before-write on a thread of their own, cuts and
 *   block reads crossing as messages, so a VM write is never queued behind the sender's
 *   hashing and compression on the main thread.
 *
 * After a crash of the agent the live bitmap is lost; the tracker then starts with every
 * block dirty unless the caller passes `initialDirty` (e.g. the scan tracker's diff of the
 * image against the manifest). A clean `close()` saves the live bitmap for the next start.
 *
 * @module
 */

export {
  createNbdTracker,
  LIVE_DIRTY_FILE,
  NbdTracker,
  type NbdTrackerOptions,
} from "./nbd_tracker.ts";
export { NbdCut } from "./nbd_cut.ts";
export { WorkerNbdTracker } from "./worker_tracker.ts";
export { DEFAULT_PRESERVE_MEMORY_BYTES, PreservedBlocks } from "./preserved_blocks.ts";
export { type NbdAddress, parseNbdAddress } from "../../agent/nbd/mod.ts";
