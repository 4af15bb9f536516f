import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { DEFAULT_QMP_TIMEOUT_MS, QmpClient } from "../../agent/qemu/mod.ts";
import { findNode } from "./_block_graph.ts";

/** A disk of a running QEMU as the tracker sees it. */
export interface QemuDisk {
  /** The node's `node-name` (a drive id given resolves to the node inserted in it). */
  nodeName: string;
  /** Block driver (`qcow2` keeps persistent bitmaps, `raw` does not). */
  driver: string;
  /** Virtual size in bytes: the volume's size. */
  sizeBytes: number;
}

/**
 * Asks the QEMU behind `qmpSocket` about its disk `node` (a node name or a drive id): what
 * a new volume's identity is made from, since the image may be nowhere presync can read.
 *
 * @throws {PresyncError} `CONNECTION_LOST` (retryable) when the QMP socket does not answer;
 *   `INVALID_ARGUMENT` naming the nodes there are when there is no such node
 */
export async function queryQemuDisk(
  qmpSocket: string,
  node: string,
  timeoutMs = DEFAULT_QMP_TIMEOUT_MS,
): Promise<QemuDisk> {
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(qmpSocket, { timeoutMs });
  } catch (err) {
    if (err instanceof PresyncError && err.code !== ErrorCode.IO) throw err;
    throw new PresyncError(
      ErrorCode.CONNECTION_LOST,
      `cannot reach the VM's QMP socket ${qmpSocket} (is the VM running, with ` +
        `-qmp unix:${qmpSocket},server=on,wait=off?)`,
      { cause: err, retryable: true },
    );
  }
  try {
    const found = await findNode(qmp, node);
    if (!(found.sizeBytes > 0)) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `QEMU's node ${found.nodeName} reports no size (driver ${found.driver || "none"}); ` +
          `give the disk's format node`,
      );
    }
    return { nodeName: found.nodeName, driver: found.driver, sizeBytes: found.sizeBytes };
  } finally {
    await qmp.close();
  }
}
