import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { type Logger, sessionLoggerOf } from "../log.ts";
import { SyncServer } from "../net/sync_server.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { Session } from "../wire/session.ts";
import type { SessionOptions } from "../wire/session_options.ts";
import type { Transport, TransportAddress, TransportListener } from "../wire/transport.ts";
import { type MetricFamily, renderMetrics } from "./metrics.ts";

/** Configuration of {@linkcode DestinationDaemon}. */
export interface DestinationConfig {
  storeDir: string;
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

  constructor(config: DestinationConfig) {
    this.#config = config;
    this.store = new ReplicaStore(new DenoFileSystem(), config.storeDir);
    this.server = new SyncServer(this.store, [createZstdCodec(), createNoneCodec()], config.log);
  }

  /** Starts listening; returns the bound address. */
  start(): TransportAddress {
    this.#listener = this.#config.transport.listen(this.#config.listen);
    this.#config.log("info", "listening", {
      address: `${this.#listener.addr.hostname}:${this.#listener.addr.port}`,
    });
    this.#acceptLoop(this.#listener);
    return this.#listener.addr;
  }

  async #acceptLoop(listener: TransportListener): Promise<void> {
    while (true) {
      let channel;
      try {
        channel = await listener.accept();
      } catch {
        return;
      }
      this.#serve(channel).catch(() => {});
    }
  }

  async #serve(channel: Parameters<typeof Session.accept>[0]): Promise<void> {
    let session: Session;
    try {
      session = await Session.accept(channel, {
        ...this.#config.session,
        psk: this.#config.psk,
        logger: sessionLoggerOf(this.#config.log),
      });
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

  /** Per-volume committed state. */
  async status(): Promise<{ volumes: Record<string, unknown>[] }> {
    const names = await this.store.list();
    const volumes = [];
    for (const name of names) {
      const live = this.server.volumes.get(name);
      let committed = live;
      if (!committed) {
        const replica = await this.store.open(name);
        committed = { ...replica.meta, connected: false };
        replica.close();
      }
      volumes.push({
        name,
        committedGeneration: committed.committedGeneration,
        rpoSeconds: committed.cutTimeMs > 0 ? (Date.now() - committed.cutTimeMs) / 1000 : null,
        sourceConnected: live?.connected ?? false,
      });
    }
    return { volumes };
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

  /** Stops listening and closes every session. */
  stop(): void {
    this.#listener?.close();
    for (const session of this.#sessions) session.abort();
  }
}
