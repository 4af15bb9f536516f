/**
 * Test support: an {@linkcode RbdBackend} on a fresh pool of the shared test cluster and a
 * fresh local state directory, both removed afterwards, so tests never see each other's
 * replicas.
 *
 * @module
 */

import {
  cephCli,
  type CephTestCluster,
  sharedCephCluster,
  uniqueName,
} from "../../fixtures/ceph.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { RbdBackend, type RbdBackendOptions } from "./rbd_backend.ts";

/** A pool made for one test, and the way to remove it. */
export interface TestPool {
  ceph: CephTestCluster;
  pool: string;
  /** Removes the pool and everything in it. */
  remove(): Promise<void>;
}

/** Creates a fresh RBD pool (8 PGs) on the shared test cluster. */
export async function createTestPool(prefix = "presync-t"): Promise<TestPool> {
  const ceph = await sharedCephCluster();
  const pool = uniqueName(prefix);
  await cephCli(ceph, ["osd", "pool", "create", pool, "8", "8"]);
  await cephCli(ceph, ["osd", "pool", "application", "enable", pool, "rbd"]);
  return {
    ceph,
    pool,
    remove: async () => {
      await cephCli(ceph, ["osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"]);
    },
  };
}

/** A back end on a fresh pool and state directory; `cleanup` removes both. */
export async function testRbdBackend(
  options: Partial<Pick<RbdBackendOptions, "keep">> = {},
): Promise<{ backend: RbdBackend; pool: TestPool; stateDir: string; cleanup(): Promise<void> }> {
  const pool = await createTestPool();
  const stateDir = await Deno.makeTempDir({ prefix: "presync-rbd-state-" });
  const backend = new RbdBackend({
    spec: { pool: pool.pool, confPath: pool.ceph.confPath, clientId: pool.ceph.clientId },
    stateDir,
    fs: new DenoFileSystem(),
    keep: options.keep,
  });
  return {
    backend,
    pool,
    stateDir,
    cleanup: async () => {
      try {
        await backend.close();
      } finally {
        await pool.remove();
        await Deno.remove(stateDir, { recursive: true });
      }
    },
  };
}
