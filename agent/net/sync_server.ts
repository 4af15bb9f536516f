import { counters } from "../daemon/counters.ts";
import type { Codec } from "../codec/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { assertSameVolume, type VolumeIdentity } from "../volume/volume_identity.ts";
import { Priority } from "../wire/frame.ts";
import type { Session } from "../wire/session.ts";
import type { SessionStream } from "../wire/session_stream.ts";
import { fetchBlocks, type FetchedBlock } from "./block_fetch.ts";
import { BulkNarrowing, type NarrowedStream } from "./bulk_narrowing.ts";
import { EvacuationFinals, type FinalGeneration } from "./evacuation_finals.ts";
import { MessageKind, MessageReader, MessageWriter, parseJsonBody } from "./message_stream.ts";
import { type ServedReplica, serveReplicaStream } from "./replica_stream.ts";
import { errorReply, parseOpenRequest, type SourceInstance } from "./sync_messages.ts";
import { MAX_SYNC_MESSAGE_BYTES, resumeToWire } from "./sync_protocol.ts";
import { type LeaseHolder, VolumeLeases } from "./volume_leases.ts";

export type { FinalGeneration } from "./evacuation_finals.ts";

/** What the sync server needs of the replica store (a `ReplicaStore`). */
export interface ReplicaCatalog {
  has(name: string): Promise<boolean>;
  open(name: string): Promise<ServedReplica>;
  init(identity: VolumeIdentity): Promise<ServedReplica>;
}

/** A volume's sync state at the destination, for status and metrics. */
export interface SyncedVolume {
  committedGeneration: number;
  cutTimeMs: number;
  /** Whether a source stream syncs it now. */
  connected: boolean;
}

/** The stream that holds a volume (see `VolumeLeases`). */
interface Holder extends LeaseHolder {
  /** The source's session, for postcopy fetches. */
  readonly session: Session;
  readonly identity: VolumeIdentity;
  /** The sync stream (bulk blocks arrive on it). */
  readonly stream: SessionStream;
  /** The replica, once opened. */
  replica?: ServedReplica;
  /** Bytes received on the sync stream so far. */
  received: number;
  /** The stream as the bulk narrowing sees it. */
  narrowed?: NarrowedStream;
}

/**
 * The destination side of the sync protocol: serves every sync stream a source opens on an
 * authenticated session, one volume per stream, against a replica store. Its pieces: the
 * per-stream loop (`replica_stream.ts`), volume leases and takeover (`volume_leases.ts`),
 * evacuation finals and the export lock (`evacuation_finals.ts`), narrowed bulk windows
 * for postcopy (`bulk_narrowing.ts`).
 */
export class SyncServer {
  readonly #store: ReplicaCatalog;
  readonly #codecs: Codec[];
  readonly #log: Logger;
  readonly #leases: VolumeLeases<Holder>;
  readonly #finals: EvacuationFinals;
  readonly #narrowing = new BulkNarrowing();
  readonly #volumes = new Map<string, SyncedVolume>();

  constructor(store: ReplicaCatalog, codecs: Codec[], log: Logger) {
    this.#store = store;
    this.#codecs = codecs;
    this.#log = log;
    this.#leases = new VolumeLeases(log);
    this.#finals = new EvacuationFinals(log);
  }

  /** Committed state per volume served since start, for status. */
  get volumes(): ReadonlyMap<string, SyncedVolume> {
    return this.#volumes;
  }

  /** Forgets the status of `name` (its replica was deleted). */
  forget(name: string): void {
    this.#volumes.delete(name);
  }

  /**
   * Serves a VM's memory stream (`presync migrate`, priority memory); unset, such streams are
   * reset.
   */
  memoryStreams: ((stream: SessionStream, session: Session) => Promise<void>) | null = null;

  /** Serves a session until it ends. */
  async serveSession(session: Session): Promise<void> {
    const handlers: Promise<void>[] = [];
    while (true) {
      const stream = await session.acceptStream().catch(() => null);
      if (!stream) break;
      if (stream.priority === Priority.MEMORY) {
        if (this.memoryStreams) handlers.push(this.memoryStreams(stream, session));
        else stream.reset();
        continue;
      }
      handlers.push(this.serveStream(stream, session));
    }
    await Promise.allSettled(handlers);
  }

  /** Serves one sync stream of `session`: `open`, then requests and blocks, until it ends. */
  async serveStream(stream: SessionStream, session: Session): Promise<void> {
    const reader = new MessageReader(stream.readable, MAX_SYNC_MESSAGE_BYTES);
    const writer = new MessageWriter(stream.writable);
    let replica: ServedReplica | null = null;
    let release: (() => void) | null = null;
    let name = "";
    try {
      const first = await reader.read();
      if (!first || first.kind !== MessageKind.JSON) {
        throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "a sync stream must start with open");
      }
      const open = parseOpenRequest(parseJsonBody(first.body));
      name = open.volume;
      const holder = this.#holder(open.identity, open.source ?? null, session, stream, reader);
      release = (await this.#leases.acquire(name, holder)).release;
      this.#narrowing.attach(name, this.#narrowed(name, holder));
      replica = await this.#store.has(name)
        ? await this.#store.open(name)
        : await this.#store.init(open.identity);
      assertSameVolume(replica.identity, open.identity);
      holder.replica = replica;
      this.#track(replica, true);
      this.#log("info", "source_attached", {
        volume: name,
        generation: replica.meta.committedGeneration,
        remote: session.remote,
        ...(open.source ? { instance: open.source.instance, host: open.source.host } : {}),
      });
      // Patches are taken from any source that offers them (sync protocol 3).
      const patches = open.patches === true;
      // And folds from any source that offers them (sync protocol 4).
      const folds = open.folds === true;
      await writer.writeJson({
        ok: true,
        resume: resumeToWire(replica.resumeInfo()),
        ...(patches ? { patches } : {}),
        ...(folds ? { folds } : {}),
      });
      const served = replica;
      await serveReplicaStream(replica, reader, writer, this.#codecs, this.#log, {
        beforeBegin: (generation, dirty) => this.#finals.checkBegin(name, generation, dirty),
        finalBegun: (generation, dirty) => this.#finals.record(name, generation, dirty),
        committed: (meta) => {
          this.#track(served, true);
          this.#finals.committed(name, meta.committedGeneration);
        },
        received: (bytes) => holder.received += bytes,
        patches,
        folds,
      });
    } catch (err) {
      counters.error(err);
      if (name) this.#log("warn", "sync_stream_failed", { volume: name, error: String(err) });
      else this.#log("warn", "sync_stream_refused", { error: String(err) });
      await writer.writeJson(errorReply(err)).catch(() => {});
    } finally {
      if (replica) this.#track(replica, false);
      replica?.close();
      release?.();
      await writer.close();
    }
  }

  #holder(
    identity: VolumeIdentity,
    source: SourceInstance | null,
    session: Session,
    stream: SessionStream,
    reader: MessageReader,
  ): Holder {
    return {
      source,
      session,
      remote: session.remote,
      sinceMs: Date.now(),
      identity,
      stream,
      received: 0,
      probe: () => session.ping().then(() => true, () => false),
      stop: () => {
        stream.reset();
        reader.cancel();
      },
    };
  }

  #narrowed(name: string, holder: Holder): NarrowedStream {
    holder.narrowed ??= {
      ping: () => holder.session.ping(),
      defaultWindowBytes: holder.session.streamWindowBytes,
      setReceiveWindow: (bytes) => holder.stream.setReceiveWindow(bytes),
      receivedBytes: () => holder.received,
      current: () => this.#leases.holder(name) === holder,
    };
    return holder.narrowed;
  }

  #track(replica: ServedReplica, connected: boolean): void {
    const { committedGeneration, cutTimeMs } = replica.meta;
    this.#volumes.set(replica.identity.name, { committedGeneration, cutTimeMs, connected });
  }

  /**
   * Waits until the source of `name` announces the final generation of an evacuation (or
   * returns the one already announced), then locks the volume for an export (see
   * `EvacuationFinals.exportFinal`).
   */
  exportFinal(
    name: string,
    signal: AbortSignal,
  ): Promise<{ final: FinalGeneration; unlock: () => void }> {
    return this.#finals.exportFinal(name, signal);
  }

  /**
   * Fetches blocks of `generation` of `name` from its source over an on-demand stream.
   *
   * @throws {PresyncError} `CONNECTION_LOST` (retryable) when no source of `name` is connected
   */
  fetch(name: string, generation: number, first: number, count: number): Promise<FetchedBlock[]> {
    const holder = this.#leases.holder(name);
    if (!holder) {
      return Promise.reject(
        new PresyncError(ErrorCode.CONNECTION_LOST, `the source of ${name} is not connected`, {
          retryable: true,
        }),
      );
    }
    return fetchBlocks(holder.session, holder.identity, generation, first, count, this.#codecs);
  }

  /**
   * Block `block` of `generation` of `name` when it already arrived in the staging area of
   * the stream serving the volume now; null otherwise (the caller fetches it).
   */
  readStaged(name: string, generation: number, block: number): Promise<Uint8Array | null> {
    const replica = this.#leases.holder(name)?.replica;
    return replica ? replica.readStaged(generation, block) : Promise.resolve(null);
  }

  /**
   * Keeps the bulk stream of `name` on a narrow receive window until `untilMs`
   * (`performance.now()` clock), across reconnects (see `BulkWindowController`).
   */
  narrowBulk(name: string, untilMs: number): void {
    const holder = this.#leases.holder(name);
    this.#narrowing.narrow(name, untilMs, holder && this.#narrowed(name, holder));
  }

  /** Gives the bulk stream of `name` the session's default window again. */
  widenBulk(name: string): void {
    this.#narrowing.widen(name);
  }
}
