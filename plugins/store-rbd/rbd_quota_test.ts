import assert from "node:assert/strict";
import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { cephCli, needCeph, uniqueName } from "../../fixtures/ceph.ts";
import type { RbdImage } from "./rbd_image.ts";
import { connectTestCluster } from "./_test_cluster.ts";

const ceph = await needCeph();
const MiB = 1 << 20;

/** Calls `attempt` every 200 ms until it returns true; fails after `timeoutMs`. */
async function pollUntil(what: string, attempt: () => Promise<boolean>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await attempt())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Writes `data` at `offset` and flushes: the flush is where a cached write meets the quota. */
async function writeThrough(image: RbdImage, offset: number, data: Uint8Array): Promise<void> {
  await image.write(offset, data);
  await image.flush();
}

Deno.test({
  name:
    "a pool over its quota fails writes with a retryable NO_SPACE, cache on or off, not a hang; " +
    "earlier data stays readable and writes resume once the quota is lifted",
  ignore: ceph.ignore,
  async fn() {
    const cached = await connectTestCluster({ opTimeoutMs: 20_000 });
    const uncached = await connectTestCluster({
      opTimeoutMs: 20_000,
      config: { rbd_cache: "false" },
    });
    const test = cached.ceph;
    const poolName = uniqueName("presync-quota");
    await cephCli(test, ["osd", "pool", "create", poolName, "8", "8"]);
    try {
      await cephCli(test, ["osd", "pool", "application", "enable", poolName, "rbd"]);
      await cephCli(test, ["osd", "pool", "set-quota", poolName, "max_bytes", String(4 * MiB)]);
      const pool = cached.cluster.openPool(poolName);
      await pool.createImage("presync-a", 64 * MiB);
      await pool.createImage("presync-b", 64 * MiB);
      const a = await pool.openImage("presync-a");
      const b = await uncached.cluster.openPool(poolName).openImage("presync-b");
      const first = new Uint8Array(MiB).fill(1);
      await writeThrough(a, 0, first);

      // The quota is enforced once the mgr's statistics reach the mon: write until it is.
      let next = 1;
      let refused: PresyncError | undefined;
      await pollUntil("a write refused for the quota", async () => {
        try {
          await writeThrough(a, (next++ % 64) * MiB, new Uint8Array(MiB).fill(2));
          return false;
        } catch (err) {
          if (!(err instanceof PresyncError)) throw err;
          refused = err;
          return true;
        }
      }, 60_000);
      assert.equal(refused!.code, ErrorCode.NO_SPACE, refused!.message);
      assert.equal(refused!.retryable, true);
      assert.match(refused!.message, /EDQUOT.*set-quota/);
      const direct = await assertRejectsCode(b.write(0, new Uint8Array(MiB)), ErrorCode.NO_SPACE);
      assert.match(direct.message, /write of 1048576 bytes to .*presync-b at offset 0/);
      assertBytesEqual(await a.read(0, MiB), first, "data written before the quota");

      await cephCli(test, ["osd", "pool", "set-quota", poolName, "max_bytes", "0"]);
      for (const [image, fill] of [[a, 3], [b, 4]] as const) {
        await pollUntil(`${image.name} accepts writes once the quota is lifted`, async () => {
          try {
            await writeThrough(image, 0, new Uint8Array(MiB).fill(fill));
            return true;
          } catch (err) {
            if (err instanceof PresyncError && err.code === ErrorCode.NO_SPACE) return false;
            throw err;
          }
        }, 60_000);
        assertBytesEqual(await image.read(0, MiB), new Uint8Array(MiB).fill(fill), image.name);
      }
    } finally {
      await cached.cluster.close();
      await uncached.cluster.close();
      await cephCli(test, [
        "osd",
        "pool",
        "rm",
        poolName,
        poolName,
        "--yes-i-really-really-mean-it",
      ]);
    }
  },
});
