/**
 * Test support for this folder: a connection to the test run's shared Ceph cluster and a
 * scratch image that is removed (with its snapshots) whatever the test does.
 *
 * @module
 */

import { type CephTestCluster, sharedCephCluster, uniqueName } from "../../fixtures/ceph.ts";
import { RadosCluster, type RadosConnectOptions } from "./rados_cluster.ts";
import type { RbdImage } from "./rbd_image.ts";
import type { CreateImageOptions, RbdPool } from "./rbd_pool.ts";

/** Connects to the shared test cluster (started on first use) as its admin client. */
export async function connectTestCluster(
  options: RadosConnectOptions = {},
): Promise<{ cluster: RadosCluster; ceph: CephTestCluster }> {
  const ceph = await sharedCephCluster();
  const cluster = await RadosCluster.connect({
    confPath: ceph.confPath,
    clientId: ceph.clientId,
    ...options,
  });
  return { cluster, ceph };
}

/** What {@linkcode withScratchImage} hands its body. */
export interface ScratchImage {
  cluster: RadosCluster;
  ceph: CephTestCluster;
  pool: RbdPool;
  /** The image's name in the pool. */
  name: string;
  /** The image, open. */
  image: RbdImage;
}

/**
 * Creates a fresh image of `sizeBytes` in the shared pool, runs `body` with it open, then
 * removes it and its snapshots and closes the connection.
 */
export async function withScratchImage(
  sizeBytes: number,
  body: (scratch: ScratchImage) => Promise<void>,
  options: { create?: CreateImageOptions; connect?: RadosConnectOptions } = {},
): Promise<void> {
  const { cluster, ceph } = await connectTestCluster(options.connect);
  try {
    const pool = cluster.openPool(ceph.pool);
    const name = uniqueName("test");
    await pool.createImage(name, sizeBytes, options.create);
    let image: RbdImage | undefined;
    try {
      image = await pool.openImage(name);
      await body({ cluster, ceph, pool, name, image });
    } finally {
      await image?.close();
      const cleanup = await pool.openImage(name);
      for (const snapshot of await cleanup.snapshots.list()) {
        if (await cleanup.snapshots.isProtected(snapshot.name)) {
          await cleanup.snapshots.unprotect(snapshot.name);
        }
        await cleanup.snapshots.remove(snapshot.name);
      }
      await cleanup.close();
      await pool.removeImage(name);
    }
  } finally {
    await cluster.close();
  }
}
