import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { io } from "../../agent/fs/io_error.ts";
import type { QmpClient } from "../../agent/qemu/mod.ts";
import { listExports, listJobs, listNodes, until } from "./_block_graph.ts";
import type { TrackerNames } from "./_names.ts";
import type { TransactionAction } from "./_recovery_plan.ts";

/** Runs a QEMU job (`blockdev-create`) to its end and dismisses it. */
async function runJob(
  qmp: QmpClient,
  id: string,
  command: string,
  args: Record<string, unknown>,
  timeoutMs: number,
): Promise<void> {
  await qmp.execute(command, { ...args, "job-id": id });
  let error: string | undefined;
  await until(`finish job ${id}`, async () => {
    const jobs = await qmp.execute("query-jobs") as {
      id: string;
      status: string;
      error?: string;
    }[];
    const job = jobs.find((j) => j.id === id);
    error = job?.error;
    return job === undefined || job.status === "concluded";
  }, timeoutMs);
  await qmp.execute("job-dismiss", { id }).catch(() => {});
  if (error !== undefined) {
    throw new PresyncError(
      ErrorCode.QMP_COMMAND_FAILED,
      `QEMU job ${id} (${command}) failed: ${error}`,
    );
  }
}

/**
 * A point-in-time view of a running VM's disk (image fleecing): a temporary qcow2 overlay
 * whose backing is the disk's node, filled by a `blockdev-backup sync=none` job: from the
 * moment the job starts, the old content of every cluster the guest writes is copied into
 * the overlay first, so reading the overlay gives the disk as it was at that moment while
 * the VM runs on. The overlay is created by QEMU itself (`blockdev-create`) in `dir`.
 */
export class Fleece {
  readonly #qmp: QmpClient;
  readonly #names: TrackerNames;
  readonly #generation: number;
  readonly #dir: string;

  private constructor(qmp: QmpClient, names: TrackerNames, generation: number, dir: string) {
    this.#qmp = qmp;
    this.#names = names;
    this.#generation = generation;
    this.#dir = dir;
  }

  /** The overlay's node: export it, read it. */
  get node(): string {
    return this.#names.fleeceNode(this.#generation);
  }

  /**
   * Creates the overlay (empty, `sizeBytes`) over `backingNode`; the copy-before-write job
   * starts only with {@linkcode backupAction}, inside the caller's transaction.
   */
  static async prepare(
    qmp: QmpClient,
    names: TrackerNames,
    generation: number,
    backingNode: string,
    sizeBytes: number,
    dir: string,
    timeoutMs: number,
  ): Promise<Fleece> {
    const fleece = new Fleece(qmp, names, generation, dir);
    const file = names.fleeceFile(dir, generation);
    const fileNode = names.fleeceFileNode(generation);
    try {
      await runJob(qmp, names.createJob(generation, 1), "blockdev-create", {
        options: { driver: "file", filename: file, size: 0 },
      }, timeoutMs);
      await qmp.execute("blockdev-add", { driver: "file", "node-name": fileNode, filename: file });
      await runJob(qmp, names.createJob(generation, 2), "blockdev-create", {
        options: { driver: "qcow2", file: fileNode, size: sizeBytes },
      }, timeoutMs);
      await qmp.execute("blockdev-add", {
        driver: "qcow2",
        "node-name": fleece.node,
        file: fileNode,
        backing: backingNode,
      });
    } catch (err) {
      await fleece.teardown(timeoutMs).catch(() => {});
      throw err;
    }
    return fleece;
  }

  /** The transaction action that starts copy-before-write from `device` into the overlay. */
  backupAction(device: string): TransactionAction {
    return {
      type: "blockdev-backup",
      data: {
        device,
        target: this.node,
        sync: "none",
        "job-id": this.#names.backupJob(this.#generation),
      },
    };
  }

  /** Stops the job, drops both nodes and deletes the overlay file. Idempotent. */
  teardown(timeoutMs: number): Promise<void> {
    return removeLeftovers(this.#qmp, this.#names, this.#dir, timeoutMs, this.#generation);
  }
}

/**
 * Removes what presync created in QEMU for this volume — exports, jobs, overlay nodes and
 * overlay files in `dir` — for one `generation`, or all of them (leftovers of an agent that
 * died mid-generation). Never touches anything not named by `names`.
 */
export async function removeLeftovers(
  qmp: QmpClient,
  names: TrackerNames,
  dir: string,
  timeoutMs: number,
  generation?: number,
): Promise<void> {
  const g = generation ?? 0;
  const ids = new Set([
    names.export(g),
    names.backupJob(g),
    names.createJob(g, 1),
    names.createJob(g, 2),
    names.fleeceNode(g),
    names.fleeceFileNode(g),
  ]);
  const mine = (id: string) => generation === undefined ? names.isOurs(id) : ids.has(id);
  const exports = (await listExports(qmp)).filter(mine);
  for (const id of exports) await qmp.execute("block-export-del", { id, mode: "hard" });
  await until(
    "delete presync's NBD exports",
    async () => !(await listExports(qmp)).some((id) => exports.includes(id)),
    timeoutMs,
  );
  const jobs = (await listJobs(qmp)).filter(mine);
  for (const id of jobs) await qmp.execute("job-cancel", { id }).catch(() => {});
  // A cancelled backup job goes away by itself; a concluded create job waits to be dismissed.
  await until(
    "end presync's block jobs",
    async () => {
      const left = (await listJobs(qmp)).filter((id) => jobs.includes(id));
      for (const id of left) await qmp.execute("job-dismiss", { id }).catch(() => {});
      return left.length === 0;
    },
    timeoutMs,
  );
  const nodes = (await listNodes(qmp)).map((n) => n["node-name"] ?? "").filter(mine);
  // Overlays before the file nodes under them.
  nodes.sort((a, b) => Number(a.endsWith("-file")) - Number(b.endsWith("-file")));
  for (const node of nodes) await qmp.execute("blockdev-del", { "node-name": node });
  for await (const entry of Deno.readDir(dir)) {
    const of = names.fleeceFileGeneration(entry.name);
    if (of === null || (generation !== undefined && of !== generation)) continue;
    const path = `${dir}/${entry.name}`;
    await io(`remove fleecing overlay ${path}`, () => Deno.remove(path));
  }
}
