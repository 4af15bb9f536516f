import { type Codec, decodeBlockFrame, ZERO_MARKER_KIND } from "../codec/mod.ts";
import type { Bitmap } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { ReplicaStore } from "../store/replica_store.ts";
import type { ReplicaVolume } from "../store/replica_volume.ts";
import type { StagedBlock } from "../store/staging_area.ts";
import {
  blockCount,
  parseVolumeIdentity,
  validateVolumeName,
  type VolumeIdentity,
} from "../volume/volume_identity.ts";
import { Signal } from "../wire/_signal.ts";
import { assertSameVolume } from "../volume/volume_identity.ts";
import type { Session } from "../wire/session.ts";
import type { SessionStream } from "../wire/session_stream.ts";
import { fetchBlocks, type FetchedBlock } from "./block_fetch.ts";
import {
  MESSAGE_HEADER_BYTES,
  MessageKind,
  MessageReader,
  MessageWriter,
  parseJsonBody,
} from "./message_stream.ts";
import {
  bitmapFromWire,
  decodeBlockMessage,
  errorReply,
  MAX_SYNC_MESSAGE_BYTES,
  resumeToWire,
} from "./sync_protocol.ts";
import { counters } from "../daemon/counters.ts";

/** The narrowed bulk window before a rate is measured. */
const NARROW_START_BYTES = 512 * 1024;
/** The smallest narrowed bulk window. */
const NARROW_MIN_BYTES = 128 * 1024;
/** How often the narrowed window follows the measured rate, ms. */
const NARROW_INTERVAL_MS = 250;
/** Arrival-rate samples the narrowed window looks back over (the highest counts). */
const NARROW_RATE_SAMPLES = 8;

/** Blocks staged per batch on the destination. */
const STAGE_BATCH = 64;

/** A line for the destination's log. */
export type ServerLog = (
  level: "info" | "warn" | "error",
  event: string,
  fields: Record<string, unknown>,
) => void;

/** What one sync stream's message loop works with. */
interface StreamContext {
  replica: ReplicaVolume;
  reader: MessageReader;
  writer: MessageWriter;
  blocks: number;
  blockSize: number;
  /** Blocks received and not yet staged. */
  batch: StagedBlock[];
  /** Blocks refused since the last flush reply. */
  rejected: number[];
  stageBatch: () => Promise<void>;
  /** Counts the bytes of each message received. */
  onBytes: (n: number) => void;
}

/** Who holds a volume: one source stream at a time; a newer one takes over. */
interface Holder {
  stop(): void;
  released: Promise<void>;
  /** The session of the source, for postcopy fetches. */
  session: Session;
  identity: VolumeIdentity;
  /** The sync stream (bulk blocks arrive on it). */
  stream: SessionStream;
  /** The replica, once opened. */
  replica?: ReplicaVolume;
  /** Bytes received on the sync stream so far. */
  received: number;
  /** Whether its bulk window is being narrowed (see `SyncServer.narrowBulk`). */
  narrowing?: boolean;
}

/** An evacuation's final generation of a volume, as its source announced it. */
export interface FinalGeneration {
  generation: number;
  /** Its blocks (owned by the server). */
  dirty: Bitmap;
  /** Whether it is committed. */
  committed: boolean;
  /** Called once, when it is committed (after the replica's meta says so). */
  onCommitted: Set<() => void>;
}

/**
 * The destination side of the sync protocol: serves every sync stream a source opens on an
 * authenticated session, one volume per stream, against a replica store.
 */
export class SyncServer {
  readonly #store: ReplicaStore;
  readonly #codecs: Codec[];
  readonly #log: ServerLog;
  readonly #holders = new Map<string, Holder>();
  /** Final generations announced by evacuating sources, per volume. */
  readonly #finals = new Map<string, FinalGeneration>();
  readonly #finalSignal = new Signal();
  /** Until when each volume's bulk window stays narrow (`narrowBulk`). */
  readonly #narrowUntil = new Map<string, number>();
  /** Volumes exported to a VM here (only their final generation may still arrive). */
  readonly #exported = new Set<string>();
  /** Committed state per volume, for status. */
  readonly volumes = new Map<
    string,
    { committedGeneration: number; cutTimeMs: number; connected: boolean }
  >();

  constructor(store: ReplicaStore, codecs: Codec[], log: ServerLog) {
    this.#store = store;
    this.#codecs = codecs;
    this.#log = log;
  }

  /** Serves a session until it ends. */
  async serveSession(session: Session): Promise<void> {
    const handlers: Promise<void>[] = [];
    while (true) {
      const stream = await session.acceptStream().catch(() => null);
      if (!stream) break;
      handlers.push(this.serveStream(stream, session));
    }
    await Promise.allSettled(handlers);
  }

  /** Serves one sync stream of `session`: `open`, then requests and blocks, until it ends. */
  async serveStream(stream: SessionStream, session: Session): Promise<void> {
    const reader = new MessageReader(stream.readable, MAX_SYNC_MESSAGE_BYTES);
    const writer = new MessageWriter(stream.writable);
    let replica: ReplicaVolume | null = null;
    let release: (() => void) | null = null;
    let holder: Omit<Holder, "released"> | null = null;
    let name = "";
    try {
      const first = await reader.read();
      if (!first || first.kind !== MessageKind.JSON) {
        throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "a sync stream must start with open");
      }
      const open = parseJsonBody(first.body);
      if (open.op !== "open") throw new PresyncError(ErrorCode.PROTOCOL_VIOLATION, "expected open");
      name = validateVolumeName(open.volume);
      const identity = parseVolumeIdentity(open.identity);
      const stop = () => {
        stream.reset();
        reader.cancel();
      };
      holder = { stop, session, identity, stream, received: 0 };
      release = await this.#acquire(name, holder);
      if ((this.#narrowUntil.get(name) ?? 0) > performance.now()) this.#narrow(name, holder);
      replica = await this.#store.has(name)
        ? await this.#store.open(name)
        : await this.#store.init(identity);
      assertSameVolume(replica.identity, identity);
      holder.replica = replica;
      this.#track(replica, true);
      this.#log("info", "source_attached", {
        volume: name,
        generation: replica.meta.committedGeneration,
      });
      await writer.writeJson({ ok: true, resume: resumeToWire(replica.resumeInfo()) });
      const counted = holder;
      await this.#loop(replica, reader, writer, (n) => counted.received += n);
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

  #track(replica: ReplicaVolume, connected: boolean): void {
    const { committedGeneration, cutTimeMs } = replica.meta;
    this.volumes.set(replica.identity.name, { committedGeneration, cutTimeMs, connected });
  }

  /** Takes the volume, stopping an older stream that still holds it. */
  async #acquire(name: string, holding: Omit<Holder, "released">): Promise<() => void> {
    // The holder object itself is kept (its counters are updated through it).
    const old = this.#holders.get(name);
    if (old) {
      this.#log("info", "source_takeover", { volume: name });
      old.stop();
      await old.released;
    }
    let done!: () => void;
    const released = new Promise<void>((resolve) => done = resolve);
    const holder = Object.assign(holding, { released });
    this.#holders.set(name, holder);
    return () => {
      if (this.#holders.get(name) === holder) this.#holders.delete(name);
      done();
    };
  }

  #recordFinal(name: string, generation: number, dirty: Bitmap): void {
    const known = this.#finals.get(name);
    if (known?.generation === generation) return;
    known?.dirty.free();
    this.#finals.set(name, {
      generation,
      dirty: dirty.clone(),
      committed: false,
      onCommitted: new Set(),
    });
    this.#log("info", "evacuation_final_generation", { volume: name, generation });
    this.#finalSignal.notify();
  }

  /**
   * Waits until the source of `name` announces the final generation of an evacuation (or
   * returns the one already announced), then locks the volume for an export: from then on
   * only that generation may be received. Returns the final generation and the unlock.
   *
   * @throws {PresyncError} `VOLUME_EXPORTED` when the volume is exported already; the
   *   signal's reason when it aborts first
   */
  async exportFinal(
    name: string,
    signal: AbortSignal,
  ): Promise<{ final: FinalGeneration; unlock: () => void }> {
    if (this.#exported.has(name)) {
      throw new PresyncError(ErrorCode.VOLUME_EXPORTED, `volume ${name} is exported already`);
    }
    const aborted = new Promise<void>((resolve) =>
      signal.addEventListener("abort", () => resolve(), { once: true })
    );
    while (!this.#finals.has(name) && !signal.aborted) {
      await Promise.race([this.#finalSignal.wait(), aborted]);
    }
    signal.throwIfAborted();
    if (this.#exported.has(name)) {
      throw new PresyncError(ErrorCode.VOLUME_EXPORTED, `volume ${name} is exported already`);
    }
    const final = this.#finals.get(name)!;
    this.#exported.add(name);
    return { final, unlock: () => this.#exported.delete(name) };
  }

  /**
   * Fetches blocks of `generation` of `name` from its source over an on-demand stream.
   *
   * @throws {PresyncError} `CONNECTION_LOST` (retryable) when no source of `name` is connected
   */
  fetch(name: string, generation: number, first: number, count: number): Promise<FetchedBlock[]> {
    const holder = this.#holders.get(name);
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
    const replica = this.#holders.get(name)?.replica;
    return replica ? replica.readStaged(generation, block) : Promise.resolve(null);
  }

  /**
   * Keeps the bulk stream of `name` on a narrow receive window until `untilMs`
   * (`performance.now()` clock), across reconnects: near the link's bandwidth-delay product
   * instead of the session's default (sized for throughput), so the source keeps only about
   * that much bulk in the network and an on-demand answer (a postcopy fetch) waits behind
   * about one round trip of bulk instead of seconds of it.
   */
  narrowBulk(name: string, untilMs: number): void {
    this.#narrowUntil.set(name, Math.max(this.#narrowUntil.get(name) ?? 0, untilMs));
    const holder = this.#holders.get(name);
    if (holder) this.#narrow(name, holder);
  }

  /** Gives the bulk stream of `name` the session's default window again. */
  widenBulk(name: string): void {
    this.#narrowUntil.delete(name);
  }

  /**
   * The narrowing loop of one holder: the window follows the highest arrival rate of the
   * last two seconds times the smallest RTT seen, ×1.5 so the link stays full (the window is
   * granted back in quarters: between 3/4 and all of it is in flight).
   */
  #narrow(name: string, holder: Omit<Holder, "released">): void {
    if (holder.narrowing) return;
    holder.narrowing = true;
    const set = (bytes: number) => {
      try {
        holder.stream.setReceiveWindow(Math.min(bytes, holder.session.streamWindowBytes));
      } catch {
        // The stream ended; nothing to narrow.
      }
    };
    const active = () =>
      this.#holders.get(name) === holder &&
      performance.now() < (this.#narrowUntil.get(name) ?? 0);
    set(NARROW_START_BYTES);
    (async () => {
      let minRttMs = Infinity;
      const rates: number[] = [];
      let last = { atMs: performance.now(), received: holder.received };
      while (active()) {
        const rtt = await holder.session.ping().catch(() => null);
        if (rtt === null) break;
        minRttMs = Math.min(minRttMs, rtt);
        await new Promise((resolve) => setTimeout(resolve, NARROW_INTERVAL_MS));
        const at = { atMs: performance.now(), received: holder.received };
        rates.push((at.received - last.received) / ((at.atMs - last.atMs) / 1000));
        if (rates.length > NARROW_RATE_SAMPLES) rates.shift();
        last = at;
        if (active()) {
          set(Math.round(Math.max(NARROW_MIN_BYTES, 1.5 * Math.max(...rates) * minRttMs / 1000)));
        }
      }
      holder.narrowing = false;
      set(holder.session.streamWindowBytes);
    })();
  }

  async #loop(
    replica: ReplicaVolume,
    reader: MessageReader,
    writer: MessageWriter,
    onBytes: (n: number) => void,
  ): Promise<void> {
    const { blockSize } = replica.identity;
    const blocks = blockCount(replica.identity);
    const batch: StagedBlock[] = [];
    const rejected: number[] = [];
    const stageBatch = async () => {
      if (batch.length === 0) return;
      const result = await replica.stage(batch.splice(0));
      rejected.push(...result.rejected);
    };
    try {
      await this.#serveMessages({
        replica,
        reader,
        writer,
        blocks,
        blockSize,
        batch,
        rejected,
        stageBatch,
        onBytes,
      });
    } finally {
      // The link went away: keep what arrived intact. Blocks staged so far are verified;
      // making them durable now means the source will not send them again.
      await stageBatch().catch(() => {});
      await replica.flush().catch(() => {});
    }
  }

  async #serveMessages(stream: StreamContext): Promise<void> {
    const { replica, reader, writer, blocks, blockSize, batch, rejected, stageBatch, onBytes } =
      stream;
    while (true) {
      const message = await reader.read();
      if (!message) return;
      onBytes(message.body.length + MESSAGE_HEADER_BYTES);
      counters.received(replica.identity.name, message.body.length + MESSAGE_HEADER_BYTES);
      if (message.kind === MessageKind.BLOCK) {
        const { block, hash, frame } = decodeBlockMessage(message.body);
        if (block >= blocks) {
          throw new PresyncError(
            ErrorCode.PROTOCOL_VIOLATION,
            `block ${block} is past the volume's end`,
          );
        }
        let data: Uint8Array | null;
        try {
          data = decodeBlockFrame(frame, { maxRawLength: blockSize, codecs: this.#codecs });
        } catch (err) {
          // A corrupt frame is as good as a corrupt block: ask for it again.
          this.#log("warn", "block_frame_rejected", {
            volume: replica.identity.name,
            block,
            error: String(err),
          });
          rejected.push(block);
          continue;
        }
        const zero = frame[0] === ZERO_MARKER_KIND;
        batch.push(
          zero ? { block, data: null } : { block, data: data.slice(), hash: hash.slice() },
        );
        counters.blockReceived(replica.identity.name);
        if (batch.length >= STAGE_BATCH) await stageBatch();
        continue;
      }
      if (message.kind !== MessageKind.JSON) {
        throw new PresyncError(
          ErrorCode.PROTOCOL_VIOLATION,
          `unknown sync message kind ${message.kind}`,
        );
      }
      const request = parseJsonBody(message.body);
      try {
        await stageBatch();
        await writer.writeJson(await this.#answer(replica, request, rejected));
      } catch (err) {
        if (err instanceof PresyncError && err.code === ErrorCode.PROTOCOL_VIOLATION) throw err;
        counters.error(err);
        await writer.writeJson(errorReply(err));
      }
    }
  }

  async #answer(
    replica: ReplicaVolume,
    request: Record<string, unknown>,
    rejected: number[],
  ): Promise<Record<string, unknown>> {
    switch (request.op) {
      case "resume":
        return { ok: true, resume: resumeToWire(replica.resumeInfo()) };
      case "begin": {
        const name = replica.identity.name;
        const generation = Number(request.generation);
        const final = request.final === true;
        using dirty = bitmapFromWire(request.dirty, blockCount(replica.identity));
        // While exported, only the final generation the export serves may (still) arrive; a
        // source restarted mid-evacuation resends it without knowing it is final.
        const serving = this.#exported.has(name) ? this.#finals.get(name) : undefined;
        if (
          serving && (generation !== serving.generation || serving.committed ||
            !serving.dirty.equals(dirty))
        ) {
          throw new PresyncError(
            ErrorCode.VOLUME_EXPORTED,
            `volume ${name} is exported to a VM at the destination (presync export); its ` +
              `replica cannot change under it: stop the export to sync the volume again`,
            { retryable: true },
          );
        }
        await replica.beginGeneration(generation, dirty, Number(request.cutTimeMs));
        if (final) this.#recordFinal(name, generation, dirty);
        return { ok: true };
      }
      case "flush": {
        await replica.flush();
        return { ok: true, seq: request.seq, rejected: rejected.splice(0) };
      }
      case "commit": {
        const meta = await counters.timeCommit(
          replica.identity.name,
          () => replica.commit(Number(request.generation), String(request.merkleRoot)),
        );
        this.#track(replica, true);
        this.#log("info", "generation_committed", {
          volume: replica.identity.name,
          generation: meta.committedGeneration,
        });
        const final = this.#finals.get(replica.identity.name);
        if (final?.generation === meta.committedGeneration && !final.committed) {
          final.committed = true;
          for (const notify of final.onCommitted) notify();
          final.onCommitted.clear();
        }
        return {
          ok: true,
          meta: {
            committedGeneration: meta.committedGeneration,
            merkleRoot: meta.merkleRoot,
            cutTimeMs: meta.cutTimeMs,
          },
        };
      }
      case "verify": {
        const report = await replica.verify({
          expectedRoot: typeof request.merkleRoot === "string" ? request.merkleRoot : undefined,
          rootOnly: request.rootOnly === true,
        });
        return { ok: true, generation: replica.meta.committedGeneration, report };
      }
      default:
        throw new PresyncError(
          ErrorCode.PROTOCOL_VIOLATION,
          `unknown sync request ${JSON.stringify(request.op)}`,
        );
    }
  }
}
