import { type NbdAddress, NbdServer } from "../nbd/mod.ts";
import type { NbdExport } from "../nbd/nbd_export.ts";
import type { ReplicaStore } from "../store/replica_store.ts";
import { OverlayExport } from "./overlay_export.ts";
import { type PostcopySource, ReplicaExport } from "./replica_export.ts";

/** Options of {@linkcode serveReplica}. */
export interface ServeReplicaOptions {
  /** The destination's store; the export reads through its back end. */
  store: ReplicaStore;
  volume: string;
  /** Where to listen (at least one). */
  listen: NbdAddress[];
  /** Serve read-write through a copy-on-write overlay (the replica is never written). */
  writable?: boolean;
  /** The overlay file when writable (default: the back end's, `<store>/<volume>.overlay`). */
  overlayPath?: string;
  /** Blocks of the generation still arriving, fetched from the source on demand. */
  postcopy?: PostcopySource;
  /** The generation `postcopy` serves (what a new overlay is recorded as written over). */
  postcopyGeneration?: number;
  /** Serve this kept committed generation instead of the last (see `ReplicaExportOptions`). */
  generation?: number;
  /** Run the store's crash recovery first (default true; see `ReplicaExportOptions`). */
  recover?: boolean;
  /** Errors that ended a client connection. */
  onError?: (err: unknown) => void;
}

/** A running replica export; `close()` stops it. */
export interface ReplicaServing extends AsyncDisposable {
  /** The export served (read-only replica, or its overlay). */
  export: NbdExport;
  /** The committed generation being served. */
  generation: number;
  /** Bound addresses. */
  addresses: NbdAddress[];
  /** The overlay file, when writable. */
  overlayPath?: string;
  close(): Promise<void>;
}

/** The export a VM is given (read-only replica, or its overlay), before any server. */
export interface OpenedReplica {
  /** The export served (read-only replica, or its overlay). */
  export: NbdExport;
  /** The committed generation being served. */
  generation: number;
  /** The overlay file, when writable. */
  overlayPath?: string;
  /** Closes the overlay and the replica. Idempotent. */
  close(): Promise<void>;
}

/**
 * Opens the committed replica of `volume` as the export a VM is given: read-only, or with
 * `writable` through its copy-on-write overlay. What {@linkcode serveReplica} serves, and
 * what an early export switches to at the switchover.
 */
export async function openReplica(
  options: Omit<ServeReplicaOptions, "listen" | "onError">,
): Promise<OpenedReplica> {
  const replica = await ReplicaExport.open({
    store: options.store,
    volume: options.volume,
    postcopy: options.postcopy,
    recover: options.recover,
    generation: options.generation,
  });
  let overlay: OverlayExport | null = null;
  // An older generation gets an overlay of its own: writes over one base never meet another.
  const defaultOverlay = options.generation === undefined
    ? replica.overlayPath
    : `${replica.overlayPath}.g${replica.meta.committedGeneration}`;
  const overlayPath = options.writable ? options.overlayPath ?? defaultOverlay : undefined;
  const close = async () => {
    await overlay?.close();
    await replica.close();
  };
  try {
    if (overlayPath) {
      const { meta } = replica;
      overlay = await OverlayExport.open({
        base: replica,
        blockSize: replica.identity.blockSize,
        overlayPath,
        baseGeneration: options.postcopy
          ? {
            generation: options.postcopyGeneration ?? meta.committedGeneration + 1,
            merkleRoot: null,
          }
          : { generation: meta.committedGeneration, merkleRoot: meta.merkleRoot },
      });
    }
  } catch (err) {
    await close();
    throw err;
  }
  return {
    export: overlay ?? replica,
    generation: replica.meta.committedGeneration,
    overlayPath,
    close,
  };
}

/**
 * Serves the committed replica of `volume` over NBD (what `presync export` runs), so an
 * evacuated VM can boot at the destination.
 */
export async function serveReplica(options: ServeReplicaOptions): Promise<ReplicaServing> {
  const opened = await openReplica(options);
  let server: NbdServer | null = null;
  const close = async () => {
    await server?.close();
    await opened.close();
  };
  try {
    server = new NbdServer([opened.export], { onError: options.onError });
    const addresses: NbdAddress[] = [];
    for (const address of options.listen) addresses.push(await server.listen(address));
    return {
      export: opened.export,
      generation: opened.generation,
      addresses,
      overlayPath: opened.overlayPath,
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
