/**
 * The `qemu` tracker plugin: a running QEMU tracked over QMP, with presync out of the VM's
 * I/O path. QEMU records the guest's writes in a dirty bitmap; presync rotates bitmaps per
 * generation and reads each generation, point-in-time, through QEMU's own NBD server while
 * the VM runs on.
 *
 * Glossary:
 * - **node**: the disk's block node in QEMU (its format node: `-blockdev node-name=…`,
 *   libvirt's `libvirt-N-format`); a drive id (`-drive id=…`) is accepted too.
 * - **bitmap** `presync-<volume>-<g>`: records the writes of generation g. *Active* (recording)
 *   until g is cut, then *frozen* (disabled) until the agent has g in hands. *Persistent*
 *   (stored in the image) on qcow2; on raw it lives only as long as the QEMU process.
 * - **rotation**: one QMP `transaction` of `block-dirty-bitmap-add presync-<volume>-<g+1>`,
 *   `block-dirty-bitmap-disable presync-<volume>-<g>` and `blockdev-backup sync=none` into
 *   a fresh overlay: QEMU applies all three between two guest writes, so every write is in
 *   exactly one generation and the overlay's view starts at the same instant.
 * - **fleecing**: that overlay (a temporary qcow2 in `workDir` whose backing is the node):
 *   copy-before-write keeps in it the old content of every cluster the guest overwrites, so
 *   reading it gives the disk as of the cut (`Cut.pointInTime`). QEMU exports it read-only
 *   over its NBD server (`nbd-server-start`, `block-export-add` with the frozen bitmap) and
 *   presync's NBD client reads the bitmap (`qemu:dirty-bitmap:…`) and the blocks from it.
 * - **release**: once the agent has the generation (committed, or recorded as pending):
 *   the export, the backup job, the overlay and the frozen bitmap go; QEMU's NBD server
 *   stops when nothing else is exported, so it is free between generations.
 *
 * ## Setting up a VM
 *
 * presync needs a QMP socket of its own (QEMU serves one client per monitor) and a
 * directory both QEMU and presync use (`workDir`: overlays and the NBD socket).
 *
 * Plain QEMU:
 *
 * ```sh
 * qemu-system-x86_64 … \
 *   -blockdev driver=file,filename=/var/lib/vms/db1.qcow2,node-name=db1-file \
 *   -blockdev driver=qcow2,file=db1-file,node-name=db1 \
 *   -device virtio-blk-pci,drive=db1 \
 *   -qmp unix:/run/presync-qemu/db1.qmp,server=on,wait=off
 * ```
 *
 * and the tracker on node `db1`, QMP socket `/run/presync-qemu/db1.qmp`.
 *
 * libvirt keeps its own monitor socket to itself; give QEMU a second one in the domain XML
 * (`virsh edit db1`; libvirt marks the domain "tainted: custom-argv", which is harmless):
 *
 * ```xml
 * <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
 *   …
 *   <qemu:commandline>
 *     <qemu:arg value='-qmp'/>
 *     <qemu:arg value='unix:/run/presync-qemu/db1.qmp,server=on,wait=off'/>
 *   </qemu:commandline>
 * </domain>
 * ```
 *
 * The node is the disk's format node, e.g. `libvirt-1-format`, or the id of its guest device:
 * give the disk a user alias (`<alias name='ua-db1'/>` in its `<disk>`) and use `ua-db1`. A
 * wrong name is refused with the list of the nodes and devices QEMU has. The agent takes the
 * disk as `--volume db1=qmp:unix:/run/presync-qemu/db1.qmp#ua-db1` (see the README).
 * QEMU runs as `libvirt-qemu`: make `/run/presync-qemu` (the QMP socket) and `workDir` writable
 * for it and for presync (a shared group), and where AppArmor confines QEMU (Debian,
 * Ubuntu) allow it, e.g. `/run/presync-qemu/** rwk,` in
 * `/etc/apparmor.d/local/abstractions/libvirt-qemu`. QEMU runs one NBD server at a time:
 * while libvirt uses it (`virsh backup-begin`, storage migration) a cut fails with a
 * retryable error and the agent tries again later. Block jobs that rewrite the image
 * (`virsh blockcommit`, `blockcopy`) may drop presync's bitmaps: presync then notices the
 * loss and scans (below). To stop using presync on a disk, remove its bitmaps:
 * `block-dirty-bitmap-remove` of every `presync-<volume>-*`.
 *
 * ## How a restart decides (never a silent full resend, never a missed write)
 *
 * At every attach (start, QEMU back after a restart, after a lost bitmap) presync first
 * removes what an earlier run left in QEMU (its exports, jobs, overlay nodes and files, all
 * named `presync-<volume>-…`), then looks at its bitmaps on the node, given the last
 * generation R the agent has durably recorded (pending, else committed):
 *
 * 1. frozen bitmaps of generations ≤ R are in the agent's hands: removed, not resent;
 * 2. frozen bitmaps of generations > R were cut but never recorded (the agent died between
 *    the rotation and recording the cut): merged into the next generation's bitmap;
 * 3. one trustworthy recording bitmap: it (merged with 2) becomes `presync-<volume>-<R+1>`
 *    in one transaction, and tracking goes on — no scan;
 * 4. none (first start; a raw disk after QEMU restarted; a qcow2 bitmap that QEMU left
 *    *inconsistent* because it was killed, or one added since QEMU started and never stored;
 *    a bitmap removed or disabled by someone else): nobody knows what was written. A fresh
 *    bitmap starts, then the whole disk is read through a read-only export and compared with
 *    the manifest (the hashes the destination has): the blocks that differ go with the next
 *    generation, together with what the fresh bitmap records during and after the scan.
 *    The scan's result is saved in `stateDir` (`qemu-scan.state`), and it is marked
 *    unfinished before the fresh bitmap exists: an agent that dies mid-scan scans again.
 *
 * A cut whose bitmap was removed by someone else fails with `QEMU_BITMAP_LOST` (retryable);
 * the next one scans as in 4. {@linkcode QemuTracker.recovery} says which way the last
 * attach went and why.
 *
 * ## VM control
 *
 * Evacuation pauses the VM with `agent/qemu`'s {@linkcode QmpVmControl} (`stop`, which
 * drains the guest's I/O first; `cont` to resume if the evacuation fails), on the tracker's
 * own QMP connection: {@linkcode QemuTracker.vm}.
 *
 * @module
 */

export { QemuTracker, type QemuTrackerOptions, type TrackerRecovery } from "./qemu_tracker.ts";
export { QemuCut } from "./qemu_cut.ts";
export { type QemuDisk, queryQemuDisk } from "./qemu_disk.ts";
export { prepareWorkDir } from "./work_dir.ts";
export { type NodeBitmap, planRecovery, type RecoveryPlan } from "./_recovery_plan.ts";
export { QmpVmControl, type VmControl } from "../../agent/qemu/mod.ts";
