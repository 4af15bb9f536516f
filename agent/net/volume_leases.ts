import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { SourceInstance } from "./sync_messages.ts";

/** Whoever syncs a volume at the destination: one source stream at a time. */
export interface LeaseHolder {
  /** The source agent as it named itself in `open` (null: an agent that does not). */
  readonly source: SourceInstance | null;
  /** The session the stream belongs to (compared by identity: same session, same agent). */
  readonly session: object;
  /** The source's address. */
  readonly remote: string;
  /** When it took the volume, ms since the epoch. */
  readonly sinceMs: number;
  /**
   * Resolves true when the holder's session answers a ping (its agent is alive), false once
   * the session is gone (it fails at the latest after the session's idle timeout).
   */
  probe(): Promise<boolean>;
  /** Ends the holder's stream: it is taken over. */
  stop(): void;
}

/** A held volume; `release` gives it up (once the holder's stream ended). Idempotent. */
export interface Lease {
  release(): void;
}

interface Held<H> {
  holder: H;
  released: Promise<void>;
}

function describe(holder: LeaseHolder): string {
  const s = holder.source;
  return s
    ? `agent ${s.instance.slice(0, 12)} on ${s.host} (pid ${s.pid}) from ${holder.remote}`
    : `an agent from ${holder.remote}`;
}

/**
 * The volume leases of a destination. A volume is held by one source stream; a new stream
 * for a held volume takes it over only when it provably comes from the same agent (same
 * session, or the same agent instance id: an agent reconnecting after a link cut before the
 * destination noticed) or when the holder is gone (its session fails to answer a ping: a
 * crashed or restarted agent). A second live agent is refused with `VOLUME_HELD` naming
 * both: two agents started from one copied state directory would otherwise take the volume
 * from each other forever. Acquisitions of one volume are handled one at a time.
 */
export class VolumeLeases<H extends LeaseHolder> {
  readonly #held = new Map<string, Held<H>>();
  readonly #queues = new Map<string, Promise<unknown>>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** The holder of `name`, if any. */
  holder(name: string): H | undefined {
    return this.#held.get(name)?.holder;
  }

  /**
   * Takes `name` for `holder`, after taking it over from a holder that is the same agent or
   * gone.
   *
   * @throws {PresyncError} `VOLUME_HELD` when another live agent holds it
   */
  acquire(name: string, holder: H): Promise<Lease> {
    const before = this.#queues.get(name) ?? Promise.resolve();
    const attempt = before.catch(() => {}).then(() => this.#acquire(name, holder));
    this.#queues.set(name, attempt);
    attempt.catch(() => {}).finally(() => {
      if (this.#queues.get(name) === attempt) this.#queues.delete(name);
    });
    return attempt;
  }

  async #acquire(name: string, holder: H): Promise<Lease> {
    const current = this.#held.get(name);
    if (current) {
      const old = current.holder;
      const sameAgent = old.session === holder.session ||
        (old.source !== null && old.source.instance === holder.source?.instance);
      if (!sameAgent && await old.probe() && this.#held.get(name) === current) {
        this.#log("warn", "source_refused", {
          volume: name,
          holder: describe(old),
          refused: describe(holder),
        });
        throw new PresyncError(
          ErrorCode.VOLUME_HELD,
          `volume ${name} is being synced by another live source agent: ${describe(old)} has ` +
            `held it since ${new Date(old.sinceMs).toISOString()} and answers; refusing ` +
            `${describe(holder)}. Two agents must not sync one volume (was an agent's state ` +
            `directory copied?): stop one of them, then run \`presync resume ${name}\` on the ` +
            `other`,
        );
      }
      if (this.#held.get(name) === current) {
        this.#log("info", "source_takeover", {
          volume: name,
          reason: sameAgent ? "the same agent reconnected" : "the previous source is gone",
          previous: describe(old),
          source: describe(holder),
        });
        old.stop();
        await current.released;
      }
    }
    let done!: () => void;
    const held: Held<H> = { holder, released: new Promise((resolve) => done = resolve) };
    this.#held.set(name, held);
    return {
      release: () => {
        if (this.#held.get(name) === held) this.#held.delete(name);
        done();
      },
    };
  }
}
