/**
 * Which other processes have a file open, from Linux's `/proc/PID/fd`: how fail-back makes
 * sure no VM (a QEMU, a `qemu-nbd`) runs on an image before presync writes into it.
 *
 * @module
 */

/** A process that has the file open. */
export interface Opener {
  pid: number;
  /** Its command name (`/proc/PID/comm`), e.g. `qemu-system-x86`. */
  name: string;
}

/**
 * The processes other than this one with `path` open (any of its hard links: compared by
 * device and inode), read from `/proc`. Processes this user may not inspect are not seen,
 * so run it as the VMs' user or root. Empty where there is no `/proc`.
 */
export async function processesWithOpen(path: string): Promise<Opener[]> {
  const target = await Deno.stat(path);
  const found: Opener[] = [];
  let pids: Deno.DirEntry[];
  try {
    pids = await Array.fromAsync(Deno.readDir("/proc"));
  } catch {
    return found;
  }
  for (const entry of pids) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    if (await holds(`/proc/${pid}/fd`, target)) {
      const name = await Deno.readTextFile(`/proc/${pid}/comm`).catch(() => "?");
      found.push({ pid, name: name.trim() });
    }
  }
  return found;
}

/** Whether a descriptor in `fdDir` is the file `target` (gone or hidden processes: no). */
async function holds(fdDir: string, target: Deno.FileInfo): Promise<boolean> {
  try {
    for await (const fd of Deno.readDir(fdDir)) {
      const info = await Deno.stat(`${fdDir}/${fd.name}`).catch(() => null);
      if (info?.ino === target.ino && info.dev === target.dev) return true;
    }
  } catch {
    // The process ended, or its descriptors are not ours to read.
  }
  return false;
}
