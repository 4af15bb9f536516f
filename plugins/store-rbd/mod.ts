/**
 * Ceph RBD from Deno: `librados`/`librbd` through `Deno.dlopen`, with no pointer in sight.
 * The RBD replica back end (issue 18) is built on them.
 *
 * Terms:
 * - **cluster**: a librados connection ({@linkcode RadosCluster}), authenticated with cephx.
 * - **pool**: a RADOS pool holding RBD images ({@linkcode RbdPool}).
 * - **image**: an RBD block device ({@linkcode RbdImage}); its **head** is the writable state.
 * - **snapshot**: a read-only point-in-time state of an image; **rollback** makes the head
 *   equal to one again.
 * - **diff**: the extents that changed between a snapshot and the head (or a later snapshot).
 * - **aio window**: asynchronous writes kept in flight up to a depth ({@linkcode AioWindow}).
 * - **replica back end**: a store of replicas in one pool ({@linkcode RbdBackend}): volume V
 *   is image `presync-V`, its manifest image `presync-V+manifest`, its metadata record the
 *   image metadata `presync.meta`, committed generation N snapshot `presync-gN`; staging and
 *   locks in a local state directory (docs/STORE.md, "RBD back end").
 *
 * Every failure is a `PresyncError` (see {@linkcode rbdError} for the errno mapping).
 *
 * @module
 */

export { type AioTarget, AioWindow, MAX_AIO_DEPTH } from "./aio_window.ts";
export { RadosCluster, type RadosConnectOptions } from "./rados_cluster.ts";
export { Errno, errnoName, rbdError } from "./rbd_error.ts";
export { ImageFeature, type ImageStat, RbdImage } from "./rbd_image.ts";
export { MAX_METADATA_VALUE_BYTES, RbdMetadata } from "./rbd_metadata.ts";
export { type CreateImageOptions, type OpenImageOptions, RbdPool } from "./rbd_pool.ts";
export { RbdSnapshots, type SnapshotInfo } from "./rbd_snapshots.ts";
export type { DiffExtent, DiffOptions } from "./_diff.ts";
export { MAX_NAME_BYTES } from "./_names.ts";
export { RbdBackend, type RbdBackendOptions, RbdVolume } from "./rbd_backend.ts";
export { parseRbdStoreSpec, RBD_STORE_PREFIX, type RbdStoreSpec } from "./rbd_store_spec.ts";
