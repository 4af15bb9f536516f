import { libc } from "../fs/_libc.ts";

/**
 * The nice value of the thread that serves the VM's disk (the NBD tracker's Worker): the
 * VM's own, 0, whatever the agent process runs at. The systemd unit starts the agent at
 * `Nice=10` so that sending yields the CPU to the VMs, and allows this thread back to 0
 * with `LimitNICE=+0` (an unprivileged process may lower its nice value down to that
 * limit; the unit grants no CAP_SYS_NICE).
 */
export const VM_IO_NICE = 0;

/**
 * Sets the calling thread's nice value (Linux keeps one per thread; threads started later
 * by this one inherit it). Resolves whether it was set: false where the call is not
 * available (not Linux, no FFI) or not permitted (a lower value than `RLIMIT_NICE` allows
 * without CAP_SYS_NICE); the thread then keeps its value, which is never an error.
 */
export function setThreadNice(nice: number): boolean {
  const calls = libc();
  if (!calls) return false;
  return calls.setThreadNice(calls.gettid(), nice) === 0;
}

/** The nice value of thread `tid` of this process, from `/proc` (null where unreadable). */
export function threadNice(tid: number): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/self/task/${tid}/stat`);
    // Fields after the parenthesised command name; nice is field 19 (the 17th after it).
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
  } catch {
    return null;
  }
}

/** The calling thread's id (null where FFI is unavailable). */
export function threadId(): number | null {
  return libc()?.gettid() ?? null;
}
