import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import type { QmpClient } from "../../agent/qemu/mod.ts";
import { listExports } from "./_block_graph.ts";

async function answers(socket: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes QEMU's built-in NBD server listen on `socket` (QMP `nbd-server-start`). QEMU runs
 * one NBD server at a time: one already listening on `socket` was started by presync (for
 * another volume of this VM, or before a crash) and is shared; any other is someone
 * else's, e.g. libvirt's for a storage migration, and presync says so instead of taking it.
 */
export async function ensureNbdServer(qmp: QmpClient, socket: string): Promise<void> {
  try {
    await qmp.execute("nbd-server-start", { addr: { type: "unix", data: { path: socket } } });
  } catch (err) {
    if (!(err instanceof PresyncError) || err.code !== ErrorCode.QMP_COMMAND_FAILED) throw err;
    if (await answers(socket)) return;
    throw new PresyncError(
      ErrorCode.QMP_COMMAND_FAILED,
      `QEMU could not start its NBD server on ${socket} for presync: ${err.message}. QEMU runs ` +
        `one NBD server at a time; if libvirt runs one (storage migration, backup job), ` +
        `presync reads the next generation once that job has finished`,
      { cause: err, retryable: true },
    );
  }
}

/**
 * Stops QEMU's NBD server when it is presync's (listening on `socket`) and no export is
 * left on it, so that QEMU's single NBD server is free between generations.
 */
export async function stopNbdServerIfIdle(qmp: QmpClient, socket: string): Promise<void> {
  if ((await listExports(qmp)).length > 0 || !(await answers(socket))) return;
  await qmp.execute("nbd-server-stop");
}
