import { ErrorCode, PresyncError } from "../errors.ts";

/** Where a source volume is a disk of a running QEMU: `qmp:unix:PATH#NODE`. */
export interface QmpVolumeSpec {
  /** The VM's QMP socket, an absolute path. */
  qmpSocket: string;
  /** The disk's block node (`node-name`) or drive id in that QEMU. */
  node: string;
}

/** What marks a volume's image as a QEMU disk rather than a file. */
export const QMP_VOLUME_PREFIX = "qmp:";

/** Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL). */
export const MAX_UNIX_SOCKET_PATH_BYTES = 107;

/**
 * QEMU's rule for ids and node names (`id_wellformed`: a letter, then letters, digits,
 * `-`, `.`, `_`), and its node-name buffer (32 bytes with the NUL).
 */
const NODE_PATTERN = /^[A-Za-z][A-Za-z0-9._-]{0,30}$/;

/** Whether a volume's image text names a QEMU disk (`qmp:…`), not an image file. */
export function isQmpVolumeSpec(image: string): boolean {
  return image.startsWith(QMP_VOLUME_PREFIX);
}

/**
 * Parses `qmp:unix:PATH#NODE` (the image part of `--volume NAME=qmp:unix:PATH#NODE`): a
 * QMP socket given by absolute path, and the disk's node name or drive id. Pure.
 *
 * @example
 * ```ts
 * import { parseQmpVolumeSpec } from "./qmp_volume_spec.ts";
 * const spec = parseQmpVolumeSpec("qmp:unix:/run/presync-qemu/db1.qmp#libvirt-1-format");
 * // { qmpSocket: "/run/presync-qemu/db1.qmp", node: "libvirt-1-format" }
 * ```
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` saying what was expected and what was received
 */
export function parseQmpVolumeSpec(text: string): QmpVolumeSpec {
  const fail = (why: string): never => {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `a QEMU volume must be qmp:unix:PATH#NODE (the VM's QMP socket and its disk's node ` +
        `name or drive id, e.g. qmp:unix:/run/presync-qemu/db1.qmp#libvirt-1-format): ${why}: ` +
        `received ${JSON.stringify(text)}`,
    );
  };
  if (!isQmpVolumeSpec(text)) fail(`it starts with "${QMP_VOLUME_PREFIX}"`);
  const rest = text.slice(QMP_VOLUME_PREFIX.length);
  if (!rest.startsWith("unix:")) {
    fail("only a Unix socket is supported (QMP over TCP has no authentication)");
  }
  const hash = rest.lastIndexOf("#");
  if (hash < 0) fail("the node is missing after '#'");
  const qmpSocket = rest.slice("unix:".length, hash);
  const node = rest.slice(hash + 1);
  if (!qmpSocket.startsWith("/")) fail("the socket path must be absolute");
  if (qmpSocket.includes("\0")) fail("the socket path contains a NUL byte");
  if (qmpSocket.split("/").some((part) => part === "..")) fail("the socket path contains '..'");
  const pathBytes = new TextEncoder().encode(qmpSocket).length;
  if (pathBytes > MAX_UNIX_SOCKET_PATH_BYTES) {
    fail(`the socket path is ${pathBytes} bytes, more than ${MAX_UNIX_SOCKET_PATH_BYTES}`);
  }
  if (!NODE_PATTERN.test(node)) {
    fail(
      "the node must be 1 to 31 letters, digits, '.', '_' or '-', starting with a letter " +
        "(QEMU's rule for node names and drive ids)",
    );
  }
  return { qmpSocket, node };
}

/**
 * The directory QEMU and presync share for `volume` (fleecing overlays, QEMU's NBD socket
 * `nbd.sock`): `presync-VOLUME` beside the QMP socket, where QEMU can already write.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` when the NBD socket path would be too long
 */
export function qemuWorkDir(spec: QmpVolumeSpec, volume: string): string {
  const dir = `${spec.qmpSocket.slice(0, spec.qmpSocket.lastIndexOf("/")) || ""}/presync-${volume}`;
  const socketBytes = new TextEncoder().encode(`${dir}/nbd.sock`).length;
  if (socketBytes > MAX_UNIX_SOCKET_PATH_BYTES) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `QEMU's NBD socket for volume ${volume} would be ${dir}/nbd.sock, ${socketBytes} bytes, ` +
        `more than the ${MAX_UNIX_SOCKET_PATH_BYTES} a Unix socket path may have: put the QMP ` +
        `socket in a shorter directory (e.g. /run/presync-qemu)`,
    );
  }
  return dir;
}
