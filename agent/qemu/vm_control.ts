import { ErrorCode, PresyncError } from "../errors.ts";
import { QmpClient, type QmpClientOptions } from "./qmp_client.ts";

/** A VM's run state as QEMU reports it (`query-status`). */
export interface VmStatus {
  /** True while the guest's CPUs run. */
  running: boolean;
  /** QEMU's run state: `running`, `paused`, `shutdown`, `inmigrate`, `postmigrate`, … */
  state: string;
}

/**
 * What an evacuation needs from the hypervisor: pause the VM before the final cut (so
 * nothing writes the disk any more), resume it if the evacuation fails, and tell its state.
 */
export interface VmControl {
  /**
   * Stops the guest's CPUs and waits for its disk I/O in flight to complete, so no write
   * follows. Idempotent: pausing a paused VM succeeds.
   */
  pause(): Promise<void>;
  /** Lets a paused guest run again. Idempotent. */
  resume(): Promise<void>;
  /** The current run state. */
  status(): Promise<VmStatus>;
  /** Closes the control connection; the VM is left as it is. Idempotent. */
  close(): Promise<void>;
}

/**
 * {@linkcode VmControl} over QMP: `stop` (QEMU drains the block layer before it answers, so
 * every write the guest issued has completed), `cont` and `query-status`. Either on a
 * connection of its own ({@linkcode QmpVmControl.connect}) or on one another component owns
 * ({@linkcode QmpVmControl.over}: a QMP monitor serves one client, so the QEMU tracker lends
 * its own).
 *
 * @example
 * ```ts ignore
 * const vm = await QmpVmControl.connect("/run/vm1.qmp");
 * await vm.pause();
 * console.log(await vm.status()); // { running: false, state: "paused" }
 * await vm.close();
 * ```
 */
export class QmpVmControl implements VmControl {
  readonly #qmp: () => Promise<QmpClient>;
  readonly #close: () => Promise<void>;

  private constructor(qmp: () => Promise<QmpClient>, close: () => Promise<void>) {
    this.#qmp = qmp;
    this.#close = close;
  }

  /** Connects to the VM's QMP socket; `close()` closes that connection. */
  static async connect(path: string, options?: QmpClientOptions): Promise<QmpVmControl> {
    const qmp = await QmpClient.connect(path, options);
    return new QmpVmControl(() => Promise.resolve(qmp), () => qmp.close());
  }

  /**
   * Runs on the connection `qmp()` gives (called for every command, so the owner may
   * reconnect in between); `close()` leaves it to its owner.
   */
  static over(qmp: () => Promise<QmpClient>): QmpVmControl {
    return new QmpVmControl(qmp, () => Promise.resolve());
  }

  async pause(): Promise<void> {
    await (await this.#qmp()).execute("stop");
    const status = await this.status();
    if (status.running) {
      throw new PresyncError(
        ErrorCode.QMP_COMMAND_FAILED,
        `QEMU accepted stop but the VM still runs (state ${status.state}); ` +
          `pause it by hand (virsh suspend) before evacuating`,
        { retryable: true },
      );
    }
  }

  async resume(): Promise<void> {
    const status = await this.status();
    if (status.running) return;
    await (await this.#qmp()).execute("cont");
  }

  async status(): Promise<VmStatus> {
    const reply = await (await this.#qmp()).execute("query-status") as {
      running?: boolean;
      status?: string;
    };
    return { running: reply.running === true, state: String(reply.status ?? "unknown") };
  }

  close(): Promise<void> {
    return this.#close();
  }
}
