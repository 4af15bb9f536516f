import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { NbdClient } from "../../agent/nbd/mod.ts";
import type { QmpClient } from "../../agent/qemu/mod.ts";
import { listExports, until } from "./_block_graph.ts";
import { ensureNbdServer, stopNbdServerIfIdle } from "./_nbd_server.ts";

/**
 * Read-only NBD exports of block nodes on QEMU's own NBD server (`block-export-add`), and
 * presync's NBD client connected to them.
 */
export class NbdExports {
  readonly #qmp: QmpClient;
  readonly #socket: string;
  readonly #sizeBytes: number;
  readonly #timeoutMs: number;

  /** Exports on QEMU reached through `qmp`, served on `socket`, of volumes of `sizeBytes`. */
  constructor(qmp: QmpClient, socket: string, sizeBytes: number, timeoutMs: number) {
    this.#qmp = qmp;
    this.#socket = socket;
    this.#sizeBytes = sizeBytes;
    this.#timeoutMs = timeoutMs;
  }

  /** Exports `node` as `id` (also its NBD name) with `bitmaps` as metadata contexts. */
  async add(id: string, node: string, bitmaps: string[] = []): Promise<void> {
    await ensureNbdServer(this.#qmp, this.#socket);
    await this.#qmp.execute("block-export-add", {
      type: "nbd",
      id,
      "node-name": node,
      name: id,
      writable: false,
      ...(bitmaps.length > 0 ? { bitmaps } : {}),
    });
  }

  /** Connects presync's NBD client to export `id`, selecting `contexts`. */
  async connect(id: string, contexts: string[] = []): Promise<NbdClient> {
    const client = await NbdClient.connect(
      { transport: "unix", path: this.#socket },
      id,
      { metaContexts: contexts },
    );
    if (client.sizeBytes !== this.#sizeBytes) {
      await client.close();
      throw new PresyncError(
        ErrorCode.VOLUME_MISMATCH,
        `QEMU's export ${id} is ${client.sizeBytes} bytes but the volume is ${this.#sizeBytes}`,
      );
    }
    return client;
  }

  /** Ends export `id` (dropping its connections) and the NBD server once it is idle. */
  async remove(id: string): Promise<void> {
    if ((await listExports(this.#qmp)).includes(id)) {
      await this.#qmp.execute("block-export-del", { id, mode: "hard" });
      await until(
        `delete NBD export ${id}`,
        async () => !(await listExports(this.#qmp)).includes(id),
        this.#timeoutMs,
      );
    }
    await this.stopServerIfIdle();
  }

  /** Stops QEMU's NBD server when it is presync's and serves nothing any more. */
  stopServerIfIdle(): Promise<void> {
    return stopNbdServerIfIdle(this.#qmp, this.#socket);
  }
}
