import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { QmpClient } from "../../agent/qemu/mod.ts";
import type { NodeBitmap } from "./_recovery_plan.ts";

/** The tracked node as QEMU describes it. */
export interface NodeInfo {
  /** The node's `node-name`. */
  nodeName: string;
  /** Its block driver (`qcow2`, `raw`, …): qcow2 keeps persistent bitmaps. */
  driver: string;
  /** Virtual size in bytes. */
  sizeBytes: number;
  /** Its named dirty bitmaps. */
  bitmaps: NodeBitmap[];
}

interface RawNode {
  "node-name"?: string;
  drv?: string;
  image?: { "virtual-size"?: number };
  "dirty-bitmaps"?: {
    name?: string;
    recording?: boolean;
    persistent?: boolean;
    busy?: boolean;
    inconsistent?: boolean;
  }[];
}

/** Every node of QEMU's block graph (`query-named-block-nodes`, flat). */
export async function listNodes(qmp: QmpClient): Promise<RawNode[]> {
  return await qmp.execute("query-named-block-nodes", { flat: true }) as RawNode[];
}

/**
 * The id of the guest device a drive is attached to: `qdev` is the device's id, or its QOM
 * path when the attached device has none (virtio-blk-pci attaches its inner
 * `/machine/peripheral/ID/virtio-backend`), or absent.
 */
function deviceIdOf(qdev: string | undefined): string | undefined {
  if (!qdev) return undefined;
  const path = /^\/machine\/peripheral\/([^/]+)(\/|$)/.exec(qdev);
  if (path) return path[1];
  return qdev.startsWith("/") ? undefined : qdev;
}

/**
 * The node named `node`, or the node inserted in the drive (BlockBackend) of that name
 * (`-drive id=…`) or attached to the guest device of that id (`-device …,id=…`, libvirt's
 * `<alias name='ua-…'/>`), with its bitmaps; `INVALID_ARGUMENT` naming the nodes, drives
 * and devices there are when none exists.
 */
export async function findNode(qmp: QmpClient, node: string): Promise<NodeInfo> {
  const nodes = await listNodes(qmp);
  let found = nodes.find((n) => n["node-name"] === node);
  if (!found) {
    const drives = await qmp.execute("query-block") as {
      device?: string;
      qdev?: string;
      inserted?: { "node-name"?: string };
    }[];
    const drive = drives.find((d) => d.device === node || deviceIdOf(d.qdev) === node);
    const inserted = drive?.inserted?.["node-name"];
    found = inserted === undefined ? undefined : nodes.find((n) => n["node-name"] === inserted);
    if (!found) {
      const known = [
        ...nodes.map((n) => n["node-name"]).filter((n) => n && !n.startsWith("#")),
        ...drives.flatMap((d) => [d.device, deviceIdOf(d.qdev)]).filter((d) => d),
      ];
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        `QEMU has no block node or drive named "${node}"; it has: ${known.join(", ") || "none"} ` +
          `(give the disk's format node, e.g. libvirt's "libvirt-1-format", or -blockdev node-name)`,
      );
    }
  }
  return {
    nodeName: found["node-name"]!,
    driver: found.drv ?? "",
    sizeBytes: found.image?.["virtual-size"] ?? -1,
    bitmaps: (found["dirty-bitmaps"] ?? [])
      .filter((b) => typeof b.name === "string")
      .map((b) => ({
        name: b.name!,
        recording: b.recording === true,
        persistent: b.persistent === true,
        busy: b.busy === true,
        inconsistent: b.inconsistent === true,
      })),
  };
}

/** Ids of the block exports QEMU runs. */
export async function listExports(qmp: QmpClient): Promise<string[]> {
  const exports = await qmp.execute("query-block-exports") as { id: string }[];
  return exports.map((e) => e.id);
}

/** Ids of the block jobs QEMU runs. */
export async function listJobs(qmp: QmpClient): Promise<string[]> {
  const jobs = await qmp.execute("query-jobs") as { id: string }[];
  return jobs.map((j) => j.id);
}

/** Polls `check` every 20 ms until it holds; `TIMEOUT` after `timeoutMs`. */
export async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) {
      throw new PresyncError(
        ErrorCode.TIMEOUT,
        `QEMU did not ${what} within ${timeoutMs} ms`,
        { retryable: true },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
