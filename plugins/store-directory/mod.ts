/**
 * Store back end `directory`: the embedded default. Each replica is a directory of plain
 * files under the store's root (layout in docs/STORE.md, and in code only in
 * `directory_backend.ts`):
 *
 * ```
 * <root>/<volume>/image        sparse raw image
 * <root>/<volume>/manifest     block hashes
 * <root>/<volume>/meta.json    committed state
 * <root>/<volume>/staging/     the generation being received
 * <root>/<volume>.overlay      a writable export's copy-on-write overlay (+ .map)
 * ```
 *
 * Everything goes through a `FileSystem`, so the power-cut file system of the tests stands in
 * for the disk.
 *
 * @module
 */

export { DirectoryBackend } from "./directory_backend.ts";
export { DirectoryStaging } from "./_directory_staging.ts";
