/**
 * Serving the replica at the destination over NBD (`presync export`), so an evacuated VM
 * can boot there.
 *
 * Glossary:
 * - **replica export**: the committed replica, read-only; what is served is exactly one
 *   committed generation (the store's crash recovery runs first).
 * - **overlay**: with `--writable`, the VM's writes go to a copy-on-write file beside the
 *   store (`<store>/<volume>.overlay` + `.map`), block by block; the replica itself is
 *   never written, so it can still receive or be verified against the source.
 * - **postcopy**: while an evacuation's final generation is still arriving, the export runs
 *   inside the destination daemon (`presync export --postcopy`) and a read of a block of
 *   that generation is fetched from the source on demand over the session's on-demand
 *   streams ({@linkcode PostcopyView}), with read-ahead; after the commit the replica
 *   has every block, and the blocks served are checked against the committed manifest.
 * - **early export**: for a whole-VM migration the NBD socket opens before the final
 *   generation exists ({@linkcode DeferredExport}): a destination QEMU started with
 *   `-incoming` connects and opens its disk; its requests wait for the switchover, when the
 *   export becomes the postcopy replica of the final generation.
 *
 * @module
 */

export { type PostcopySource, ReplicaExport, type ReplicaExportOptions } from "./replica_export.ts";
export { OverlayExport, type OverlayExportOptions } from "./overlay_export.ts";
export { PostcopyView, type PostcopyViewOptions } from "./postcopy_view.ts";
export {
  type OpenedReplica,
  openReplica,
  type ReplicaServing,
  serveReplica,
  type ServeReplicaOptions,
} from "./serve_replica.ts";
export { DeferredExport, type DeferredExportOptions } from "./deferred_export.ts";
