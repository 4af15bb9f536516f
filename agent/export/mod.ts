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
 * - **postcopy** (not implemented yet): while the final generation is still arriving, a
 *   read of a block not yet committed would be fetched from the source on demand. The
 *   hook is {@linkcode PostcopySource} (`isMissing`, `fetchBlock`); wiring it to the
 *   session's high-priority stream is left to the network layer.
 *
 * @module
 */

export { type PostcopySource, ReplicaExport, type ReplicaExportOptions } from "./replica_export.ts";
export { OverlayExport, type OverlayExportOptions } from "./overlay_export.ts";
export { type ReplicaServing, serveReplica, type ServeReplicaOptions } from "./serve_replica.ts";
