/**
 * The `qemu-bitmap` tracker plugin: QEMU records the VM's writes in a persistent dirty
 * bitmap of the qcow2 image; presync reads it over NBD through the
 * `qemu:dirty-bitmap:NAME` metadata context (BLOCK_STATUS) and reads the dirty blocks'
 * data from the same export.
 *
 * Glossary:
 * - **dirty bitmap**: QEMU's per-image record of written clusters (`qemu-img bitmap`,
 *   QMP `block-dirty-bitmap-*`); *persistent* bitmaps live in the qcow2 file.
 * - **rotation**: starting a new bitmap for generation g+1 *before* the bitmap of
 *   generation g is read, so no write falls between two generations.
 * - **frozen export**: an export whose content does not change while presync reads it
 *   (VM stopped, or a fleecing / snapshot export); only then is a cut point-in-time.
 *
 * ## Operator workflow: rotating bitmaps so no write is missed
 *
 * Bitmap names carry the generation: `presync-<g>`. Generation g's dirty set is what
 * `presync-<g>` recorded; the bitmap is removed only after generation g is committed.
 *
 * Offline image (VM shut down, or between runs), with `qemu-img`:
 *
 * 1. Once, before the first sync: `qemu-img bitmap --add disk.qcow2 presync-1` (an enabled,
 *    persistent bitmap) — the first generation is a full send anyway.
 * 2. For each generation g, while the VM is not running:
 *    - `qemu-img bitmap --add disk.qcow2 presync-<g+1>` — record from now on into g+1;
 *    - `qemu-img bitmap --disable disk.qcow2 presync-<g>` — freeze g's set;
 *    - `qemu-nbd --read-only --persistent --bitmap presync-<g> -x NAME --socket S disk.qcow2`
 *      and run presync with `--tracker qemu-bitmap --nbd-connect unix:S --bitmap presync-<g>`
 *      (export name NAME = the volume's name; `frozen: true`
 *      is right here: nothing writes the image);
 *    - after presync reports generation g committed: stop qemu-nbd, then
 *      `qemu-img bitmap --remove disk.qcow2 presync-<g>`.
 *    If the send fails, keep `presync-<g>`: presync resumes the pending generation from its
 *    own state; if you must start over, fold g into g+1 with
 *    `qemu-img bitmap --merge presync-<g> disk.qcow2 presync-<g+1>` before removing it.
 *
 * Running VM, with QMP (same idea, atomically): in one `transaction`, do
 * `block-dirty-bitmap-add` of `presync-<g+1>` (persistent) and `block-dirty-bitmap-disable`
 * of `presync-<g>`; export a point-in-time view (fleecing: `blockdev-backup sync=none` to a
 * temporary overlay) with `block-export-add` type nbd and `bitmaps: ["presync-<g>"]`;
 * run the cut; after the commit, `block-export-del`, drop the fleecing node and
 * `block-dirty-bitmap-remove presync-<g>`. Without fleecing the export is live and the
 * generation is fuzzy (`frozen: false`): still complete, because any block written during
 * the read is also in `presync-<g+1>`.
 *
 * @module
 */

export {
  markDirtyExtents,
  QemuBitmapTracker,
  type QemuBitmapTrackerOptions,
} from "./qemu_bitmap_tracker.ts";
