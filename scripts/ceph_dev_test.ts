import assert from "node:assert/strict";
import { needCeph, sharedCephCluster } from "../fixtures/ceph.ts";
import { pollUntil, runTool } from "../fixtures/nbd_tools.ts";

const SCRIPT = new URL("./ceph_dev.sh", import.meta.url).pathname;
const ceph = await needCeph();

/** Whether a process with this pid exists (a zombie counts as gone). */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** A `sleep` child to lease a cluster to; ended by its pid. */
function leaseHolder(): Deno.ChildProcess {
  return new Deno.Command("sleep", { args: ["600"], stdout: "null", stderr: "null" }).spawn();
}

async function end(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch {
    // Exited already.
  }
  await child.status;
}

Deno.test({
  name: "start joins a running cluster: the same settings, one more lease",
  ignore: ceph.ignore,
  async fn() {
    const shared = await sharedCephCluster();
    const holder = leaseHolder();
    try {
      const out = await runTool("bash", [
        SCRIPT,
        "start",
        "--dir",
        shared.dir,
        "--lease",
        String(holder.pid),
      ]);
      assert.match(out.stdout, new RegExp(`^CEPH_CONF=${shared.confPath}$`, "m"));
      assert.match(out.stdout, new RegExp(`^PRESYNC_CEPH_OSD_PID=${shared.osdPid}$`, "m"));
      await Deno.stat(`${shared.dir}/leases/${holder.pid}`);
      const status = await runTool("bash", [SCRIPT, "status", "--dir", shared.dir]);
      assert.match(status.stdout, /active\+clean/);
    } finally {
      await end(holder);
    }
  },
});

Deno.test({
  name: "a cluster stops by itself once its lease holders exit, killing only its own daemons",
  ignore: ceph.ignore,
  async fn() {
    const shared = await sharedCephCluster();
    const parent = await Deno.makeTempDir({ prefix: "presync-ceph-dev-test-" });
    const dir = `${parent}/cluster`;
    const holder = leaseHolder();
    try {
      const out = await new Deno.Command("bash", {
        args: [SCRIPT, "start", "--dir", dir, "--lease", String(holder.pid)],
        env: { PRESYNC_CEPH_OSD_GIB: "2" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      const monHost = /^PRESYNC_CEPH_MON_HOST=(.*)$/m.exec(text)?.[1];
      assert.ok(monHost && monHost !== shared.monHost, `a port of its own: ${monHost}`);
      const pids: number[] = [];
      for await (const entry of Deno.readDir(`${dir}/run`)) {
        if (entry.name.endsWith(".pid")) {
          pids.push(Number((await Deno.readTextFile(`${dir}/run/${entry.name}`)).split(" ")[0]));
        }
      }
      assert.equal(pids.length, 4, "mon, mgr, osd and the watchdog");
      for (const pid of pids) assert.ok(await alive(pid), `pid ${pid} runs`);

      await end(holder);
      const gone = async () => {
        for (const pid of pids) if (await alive(pid)) return false;
        return await Deno.stat(dir).then(() => false, () => true);
      };
      await pollUntil("the leased cluster's daemons and directory to go", gone, 90_000);
      assert.ok(await alive(shared.osdPid), "the shared cluster's OSD still runs");
      const env = await runTool("bash", [SCRIPT, "env", "--dir", dir], 1);
      assert.match(env.stderr, new RegExp(`no cluster in ${dir}`));
    } finally {
      await end(holder);
      await Deno.remove(parent, { recursive: true });
    }
  },
});
