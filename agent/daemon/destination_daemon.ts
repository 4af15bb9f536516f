import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import {
  DeferredExport,
  type OpenedReplica,
  openReplica,
  PostcopyView,
  ReplicaExport,
  serveReplica,
} from "../export/mod.ts";
import { type NbdAddress, NbdServer, nbdUri } from "../nbd/mod.ts";
import type { FinalGeneration } from "../net/evacuation_finals.ts";
import { type Logger, sessionLoggerOf } from "../log.ts";
import { SyncServer } from "../net/sync_server.ts";
import type { ReplicaStore } from "../store/replica_store.ts";
import { openManifest } from "../store/open_manifest.ts";
import { blockCount } from "../volume/volume_identity.ts";
import { Session } from "../wire/session.ts";
import type { SessionStream } from "../wire/session_stream.ts";
import { readTunnelHeader, receiveVm, writeTunnelHeader } from "../migrate/mod.ts";
import { errorReply } from "../net/sync_messages.ts";
import { checkSessionOptions, type SessionOptions } from "../wire/session_options.ts";
import { PreauthGuard, type PreauthSlot } from "../wire/preauth_guard.ts";
import type { SessionLogger } from "../wire/session_logger.ts";
import type {
  ByteChannel,
  Transport,
  TransportAddress,
  TransportListener,
} from "../wire/transport.ts";
import { type MetricFamily, renderMetrics } from "./metrics.ts";
import { type VolumeListing, volumeListing } from "../store/volume_listing.ts";

/** Where and how {@linkcode DestinationDaemon.export} serves a volume. */
export interface ExportRequest {
  listen: NbdAddress[];
  writable?: boolean;
  /** The overlay file when writable (default `<store>/<volume>.overlay`). */
  overlayPath?: string;
  /**
   * Listen at once, before the final generation exists (a whole-VM migration: the
   * destination QEMU opens its disk at start-up); requests wait for the switchover.
   */
  early?: boolean;
  /**
   * With `early`: the destination QEMU's incoming migration socket (`-incoming unix:PATH`);
   * a source's `presync migrate` of this volume is carried to it while the export runs.
   */
  incoming?: string;
}

/** Configuration of {@linkcode DestinationDaemon}. */
export interface DestinationConfig {
  /** The replica store (over its back end). */
  store: ReplicaStore;
  listen: TransportAddress;
  transport: Transport;
  psk: Uint8Array;
  log: Logger;
  session?: Partial<Omit<SessionOptions, "psk" | "logger">>;
}

/**
 * The destination agent: accepts authenticated sessions from source agents and serves
 * their sync streams against the replica store.
 */
export class DestinationDaemon {
  readonly #config: DestinationConfig;
  readonly store: ReplicaStore;
  readonly server: SyncServer;
  #listener: TransportListener | null = null;
  readonly #sessions = new Set<Session>();
  readonly #exports = new Map<string, { generation: number; view?: PostcopyView }>();
  /** Export requests in progress per volume, waiting for the final generation or serving. */
  readonly #exportRequests = new Map<string, number>();
  readonly #stopping = new AbortController();
  /** Volume → the destination QEMU's incoming socket, while its early export runs. */
  readonly #incoming = new Map<string, string>();
  /** Volume → its early export's switchover (see `DeferredExport.whenSwitched`). */
  readonly #switched = new Map<string, () => Promise<void>>();
  readonly #codecs = [createZstdCodec(), createNoneCodec()];

  constructor(config: DestinationConfig) {
    this.#config = config;
    this.store = config.store;
    this.server = new SyncServer(this.store, this.#codecs, config.log);
    this.server.memoryStreams = (stream, session) => this.#receiveVm(stream, session);
  }

  /**
   * A source's memory stream: its header names the volume; the stream goes to that volume's
   * destination QEMU, registered by its early export (`incoming`), or is refused.
   */
  async #receiveVm(stream: SessionStream, session: Session): Promise<void> {
    const log = this.#config.log;
    let volume = "";
    try {
      const { header, rest } = await readTunnelHeader(stream.readable);
      volume = String(header.volume);
      const incoming = this.#incoming.get(volume);
      if (!incoming) {
        throw new PresyncError(
          ErrorCode.MIGRATION_ABORTED,
          `volume ${volume} has no destination VM waiting: run presync export ${volume} ` +
            `--postcopy --early --incoming PATH at the destination first`,
        );
      }
      await writeTunnelHeader(stream.writable, { ok: true });
      log("info", "migration_incoming", { volume, incoming });
      const codec = this.#codecs[0];
      const switched = this.#switched.get(volume);
      const stats = await receiveVm(incoming, { readable: rest, writable: stream.writable }, {
        codec,
        codecs: this.#codecs,
        linkClosed: session.closed,
        // The destination QEMU completes (and runs) only on the final generation's disk: the
        // memory's end can overtake the final generation's begin, which travels on bulk.
        beforeEnd: switched,
      });
      log("info", "migration_received", { volume, ...stats });
    } catch (err) {
      log("warn", "migration_failed", { volume, error: String(err) });
      await writeTunnelHeader(stream.writable, errorReply(err)).catch(() => {});
      stream.reset();
    }
  }

  /**
   * Starts listening; returns the bound address.
   *
   * @throws {PresyncError} `INVALID_ARGUMENT` for a bad session option, before listening
   */
  start(): TransportAddress {
    checkSessionOptions(this.#config.session ?? {});
    this.#listener = this.#config.transport.listen(this.#config.listen);
    this.#config.log("info", "listening", {
      address: `${this.#listener.addr.hostname}:${this.#listener.addr.port}`,
    });
    this.#acceptLoop(this.#listener);
    return this.#listener.addr;
  }

  async #acceptLoop(listener: TransportListener): Promise<void> {
    // Limits before authentication (caps, per-source caps, deadline, rate-limited logs).
    const guard = new PreauthGuard({ logger: sessionLoggerOf(this.#config.log) });
    try {
      while (true) {
        let channel;
        try {
          channel = await listener.accept();
        } catch {
          return;
        }
        const slot = guard.admit(channel);
        if (slot) this.#serve(channel, slot, guard.logger).catch(() => {});
      }
    } finally {
      guard.close();
    }
  }

  async #serve(channel: ByteChannel, slot: PreauthSlot, logger: SessionLogger): Promise<void> {
    let session: Session;
    try {
      session = await slot.run(() =>
        Session.accept(channel, { ...this.#config.session, psk: this.#config.psk, logger })
      );
    } catch {
      // The session layer logged why (auth_failed, handshake_failed…); nothing else to do.
      channel.close();
      return;
    }
    this.#sessions.add(session);
    try {
      await this.server.serveSession(session);
    } finally {
      this.#sessions.delete(session);
      session.abort();
    }
  }

  /**
   * Serves volume `name` to a VM over NBD from inside the daemon, for an evacuation: waits
   * for the source to announce the final generation, then serves the replica with that
   * generation's blocks fetched from the source until they are committed (postcopy), and
   * keeps the volume from changing until `signal` aborts. `emit` reports progress:
   * `listening` (early exports: the socket is open, requests wait for the switchover),
   * `waiting`, `serving` (addresses), `committed` (with the postcopy counters).
   */
  async export(
    name: string,
    request: ExportRequest,
    signal: AbortSignal,
    emit: (event: Record<string, unknown>) => void,
  ): Promise<void> {
    if (!(await this.store.has(name))) {
      throw new PresyncError(
        ErrorCode.VOLUME_NOT_FOUND,
        `no replica of volume ${name} in ${this.store.location}`,
      );
    }
    this.#exportRequests.set(name, (this.#exportRequests.get(name) ?? 0) + 1);
    try {
      await this.#export(name, request, AbortSignal.any([signal, this.#stopping.signal]), emit);
    } finally {
      const left = this.#exportRequests.get(name)! - 1;
      if (left > 0) this.#exportRequests.set(name, left);
      else this.#exportRequests.delete(name);
    }
  }

  async #export(
    name: string,
    request: ExportRequest,
    signal: AbortSignal,
    emit: (event: Record<string, unknown>) => void,
  ): Promise<void> {
    const log = this.#config.log;
    const onError = (err: unknown) =>
      log("warn", "export_connection_ended", { volume: name, error: String(err) });
    // Early: the NBD socket opens now and its requests wait for the switchover.
    let early:
      | { deferred: DeferredExport; server: NbdServer; uris: string[]; before?: ReplicaExport }
      | undefined;
    if (request.early) {
      const { identity } = await this.store.readMeta(name);
      // Reads before the switchover (QEMU probing at start-up) see the committed replica.
      const before = await ReplicaExport.open({ store: this.store, volume: name, recover: false })
        .catch((err) => {
          if (err instanceof PresyncError && err.code === ErrorCode.VOLUME_INITIALISING) {
            return undefined;
          }
          throw err;
        });
      const deferred = new DeferredExport({
        name,
        sizeBytes: identity.sizeBytes,
        readOnly: request.writable !== true,
        before,
      });
      const server = new NbdServer([deferred], { onError });
      try {
        const uris = [];
        for (const address of request.listen) uris.push(nbdUri(await server.listen(address), name));
        early = { deferred, server, uris, before };
      } catch (err) {
        await server.close();
        await before?.close();
        throw err;
      }
      if (request.incoming) {
        this.#incoming.set(name, request.incoming);
        this.#switched.set(name, () => deferred.whenSwitched());
      }
      log("info", "export_listening", { volume: name, uris: early.uris });
      emit({
        event: "listening",
        volume: name,
        writable: request.writable === true,
        uris: early.uris,
      });
    }
    let view: PostcopyView | undefined;
    let opened: OpenedReplica | undefined;
    let onCommitted: (() => void) | undefined;
    let final: FinalGeneration | undefined;
    let unlock = () => {};
    try {
      emit({ event: "waiting", volume: name });
      ({ final, unlock } = await this.server.exportFinal(name, signal));
      if (!final.committed) {
        const generation = final.generation;
        view = new PostcopyView({
          dirty: final.dirty,
          fetch: (first, count) => this.server.fetch(name, generation, first, count),
          readStaged: (block) => this.server.readStaged(name, generation, block),
          onRetry: (err) =>
            log("warn", "postcopy_fetch_retry", { volume: name, error: String(err) }),
        });
        const postcopy = view;
        // Until the commit, fetched blocks must not wait behind seconds of queued bulk.
        this.server.narrowBulk(name, Infinity);
        onCommitted = () => {
          this.server.widenBulk(name);
          this.#postcopyDone(name, postcopy).then(
            emit,
            (err) => log("error", "postcopy_check_failed", { volume: name, error: String(err) }),
          );
        };
        final.onCommitted.add(onCommitted);
      }
      const replica = {
        store: this.store,
        volume: name,
        writable: request.writable,
        overlayPath: request.overlayPath,
        postcopy: view,
        postcopyGeneration: final.generation,
        recover: false,
      };
      let uris: string[];
      let overlay: string | undefined;
      if (early) {
        opened = await openReplica(replica);
        early.deferred.resolve(opened.export);
        uris = early.uris;
        overlay = opened.overlayPath;
      } else {
        const serving = await serveReplica({ ...replica, listen: request.listen, onError });
        opened = serving;
        uris = serving.addresses.map((a) => nbdUri(a, name));
        overlay = serving.overlayPath;
      }
      const details = {
        event: "serving",
        volume: name,
        generation: final.generation,
        postcopy: !final.committed,
        writable: request.writable === true,
        overlay: overlay ?? null,
        uris,
      };
      log("info", "export_started", details);
      this.#exports.set(name, { generation: final.generation, view });
      emit(details);
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    } finally {
      if (onCommitted) final?.onCommitted.delete(onCommitted);
      this.#exports.delete(name);
      this.server.widenBulk(name);
      early?.deferred.fail(
        new PresyncError(ErrorCode.TIMEOUT, `the export of ${name} stopped before the switchover`),
      );
      if (early && this.#incoming.get(name) === request.incoming) {
        this.#incoming.delete(name);
        this.#switched.delete(name);
      }
      await early?.server.close();
      await early?.before?.close();
      await opened?.close();
      view?.close();
      unlock();
      log("info", "export_stopped", { volume: name });
    }
  }

  /** After the final commit: checks the blocks the VM was served against the manifest. */
  async #postcopyDone(name: string, view: PostcopyView): Promise<Record<string, unknown>> {
    const volume = this.store.backend.volume(name);
    const { identity } = await this.store.readMeta(name);
    const manifest = await openManifest(volume, blockCount(identity), "read");
    try {
      const differing = await view.markCommitted((block) => manifest.read(block, 1));
      const fields = { volume: name, ...view.stats, differing: differing.length };
      if (differing.length > 0) {
        this.#config.log("error", "postcopy_mismatch", {
          ...fields,
          blocks: differing.slice(0, 16),
          hint: "the source changed after the final cut (was its VM paused?)",
        });
      } else this.#config.log("info", "postcopy_committed", fields);
      return { event: "committed", ...fields };
    } finally {
      manifest.close();
    }
  }

  /**
   * Per-volume committed state, as recorded (no crash recovery, no other side effect: a
   * volume no source has opened since a crash shows its last recorded generation).
   */
  async status(): Promise<{ volumes: Record<string, unknown>[] }> {
    const volumes = [];
    for (const name of await this.store.list()) {
      const live = this.server.volumes.get(name);
      const committed = live ?? await this.store.readMeta(name);
      const exported = this.#exports.get(name);
      volumes.push({
        name,
        exported: exported
          ? {
            generation: exported.generation,
            postcopy: exported.view ? !exported.view.committed : false,
            ...exported.view?.stats,
          }
          : null,
        committedGeneration: committed.committedGeneration,
        rpoSeconds: committed.cutTimeMs > 0 ? (Date.now() - committed.cutTimeMs) / 1000 : null,
        sourceConnected: live?.connected ?? false,
      });
    }
    return { volumes };
  }

  /**
   * What `presync volumes` lists: per volume its size, committed generation, the age of that
   * generation's cut, the storage it occupies, whether it is initialising, whether a source is
   * connected and whether it is exported. No side effects.
   */
  async volumes(): Promise<{ volumes: VolumeListing[] }> {
    const volumes: VolumeListing[] = (await this.store.summaries()).map((summary) => ({
      ...volumeListing(summary),
      sourceConnected: this.server.volumes.get(summary.name)?.connected ?? false,
      exported: this.#exportRequests.has(summary.name),
    }));
    return { volumes };
  }

  /**
   * Deletes volume `name` and all it holds; a later sync of that name starts a full one.
   *
   * @throws {PresyncError} `STORE_BUSY` while a source is connected to it or an export of it
   *   runs (or waits for an evacuation), `VOLUME_NOT_FOUND` when there is no such volume
   */
  async delete(name: string): Promise<{ volume: string; deleted: true }> {
    const busy = this.server.volumes.get(name)?.connected
      ? "a source agent is connected to it; stop that agent first"
      : this.#exportRequests.has(name)
      ? "it is exported (presync export --postcopy); stop the export first"
      : null;
    if (busy) {
      throw new PresyncError(
        ErrorCode.STORE_BUSY,
        `volume ${name} cannot be deleted while ${busy}`,
        { retryable: true },
      );
    }
    await this.store.remove(name);
    this.server.forget(name);
    this.#config.log("info", "volume_deleted", { volume: name });
    return { volume: name, deleted: true };
  }

  /** Prometheus metrics. */
  metrics(): string {
    const samples = [...this.server.volumes.entries()];
    const families: MetricFamily[] = [
      {
        name: "presync_replica_committed_generation",
        help: "Last committed generation of the replica.",
        type: "gauge",
        samples: samples.map(([volume, v]) => ({
          labels: { volume },
          value: v.committedGeneration,
        })),
      },
      {
        name: "presync_replica_rpo_seconds",
        help: "Age of the cut of the last committed generation.",
        type: "gauge",
        samples: samples.map(([volume, v]) => ({
          labels: { volume },
          value: v.cutTimeMs > 0 ? (Date.now() - v.cutTimeMs) / 1000 : null,
        })),
      },
      {
        name: "presync_sessions",
        help: "Authenticated source sessions open now.",
        type: "gauge",
        samples: [{ labels: {}, value: this.#sessions.size }],
      },
    ];
    return renderMetrics(families);
  }

  /** Stops listening, every export and every session. */
  stop(): void {
    this.#stopping.abort();
    this.#listener?.close();
    for (const session of this.#sessions) session.abort();
  }
}
