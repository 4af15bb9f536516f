/**
 * Talking to a running QEMU over its machine protocol (QMP): the client, and the control
 * of a VM's run state that an evacuation needs.
 *
 * Glossary:
 * - **QMP**: QEMU's JSON protocol on a monitor socket (`-qmp unix:PATH,server=on,wait=off`,
 *   or libvirt's `virsh qemu-monitor-command`): a *greeting*, then `qmp_capabilities`, then
 *   *commands* answered by a *return* or an *error* (with an error *class*), and
 *   asynchronous *events* (`STOP`, `BLOCK_JOB_CANCELLED`, …), one JSON object per line.
 * - **command id**: each command carries an id that QEMU echoes, so a late answer to a
 *   command that timed out is recognised and dropped.
 * - **node**: a block graph node (`node-name`), e.g. a drive's format node; dirty bitmaps,
 *   block jobs and exports act on nodes.
 * - **QEMU volume**: `--volume NAME=qmp:unix:PATH#NODE`, a source volume that is a disk of a
 *   running QEMU rather than an image file (the qemu tracker).
 * - **pause / resume**: QMP `stop` / `cont`; `stop` drains the block layer first, so once it
 *   answers every write the guest issued has completed.
 *
 * @module
 */

export {
  DEFAULT_QMP_MAX_LINE_BYTES,
  DEFAULT_QMP_TIMEOUT_MS,
  QmpClient,
  type QmpClientOptions,
  type QmpEvent,
} from "./qmp_client.ts";
export {
  decodeQmpMessage,
  encodeQmpCommand,
  type QemuVersion,
  type QmpMessage,
} from "./qmp_message.ts";
export { QmpVmControl, type VmControl, type VmStatus } from "./vm_control.ts";
export {
  isQmpVolumeSpec,
  MAX_UNIX_SOCKET_PATH_BYTES,
  parseQmpVolumeSpec,
  qemuWorkDir,
  QMP_VOLUME_PREFIX,
  type QmpVolumeSpec,
} from "./qmp_volume_spec.ts";
