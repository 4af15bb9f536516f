import { assertInteger, ErrorCode, PresyncError } from "../errors.ts";

/**
 * Limits on connections that have not authenticated yet, after OpenSSH's `MaxStartups`
 * (random early drop between a start and a full mark), `PerSourceMaxStartups` and
 * `LoginGraceTime`.
 */
export interface PreauthLimits {
  /** Unauthenticated connections allowed at once; beyond this every new one is refused. */
  maxPending: number;
  /**
   * From this many pending on, a new connection is refused with a probability rising
   * linearly from `earlyDropProbability` to 1 at `maxPending`.
   */
  earlyDropStart: number;
  /** Refusal probability at `earlyDropStart`, 0 to 1. */
  earlyDropProbability: number;
  /** Unauthenticated connections allowed at once from one source address. */
  maxPendingPerSource: number;
  /** Time a connection has to authenticate before it is closed, in ms. */
  handshakeDeadlineMs: number;
}

/** The defaults: 256 pending, early drop from 64 (30 %), 32 per source, 10 s to authenticate. */
export function defaultPreauthLimits(): PreauthLimits {
  return {
    maxPending: 256,
    earlyDropStart: 64,
    earlyDropProbability: 0.3,
    maxPendingPerSource: 32,
    handshakeDeadlineMs: 10_000,
  };
}

/**
 * Checks limits before anything starts.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` naming the offending key
 */
export function checkPreauthLimits(limits: PreauthLimits): void {
  assertInteger("maxPending", limits.maxPending, 1, 1 << 20);
  assertInteger("earlyDropStart", limits.earlyDropStart, 1, limits.maxPending);
  assertInteger("maxPendingPerSource", limits.maxPendingPerSource, 1, limits.maxPending);
  assertInteger("handshakeDeadlineMs", limits.handshakeDeadlineMs, 1, 3_600_000);
  if (!(limits.earlyDropProbability >= 0 && limits.earlyDropProbability <= 1)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `earlyDropProbability must be from 0 to 1: received ${limits.earlyDropProbability}`,
    );
  }
}

/** Why a connection was refused: all slots taken, its source's slots taken, or early drop. */
export type RefusalReason = "full" | "source_full" | "early_drop";

/** What {@linkcode PreauthGate.admit} decided. */
export type Admission = { admitted: true } | { admitted: false; reason: RefusalReason };

/**
 * The pre-authentication admission policy, pure (no sockets, no clock): counts pending
 * unauthenticated connections in total and per source address and decides whether a new one
 * may start its handshake. Every admitted connection must be released exactly once, when
 * its handshake ends either way.
 *
 * @example
 * ```ts
 * import { defaultPreauthLimits, PreauthGate } from "./preauth_gate.ts";
 * const gate = new PreauthGate({ ...defaultPreauthLimits(), maxPendingPerSource: 1 });
 * console.assert(gate.admit("10.0.0.9").admitted);
 * console.assert(!gate.admit("10.0.0.9").admitted); // that source's one slot is taken
 * gate.release("10.0.0.9");
 * ```
 */
export class PreauthGate {
  readonly limits: PreauthLimits;
  readonly #random: () => number;
  readonly #perSource = new Map<string, number>();
  #pending = 0;

  /** `random` returns a number in [0, 1) (default `Math.random`; tests pass a seeded one). */
  constructor(limits: PreauthLimits, random: () => number = Math.random) {
    checkPreauthLimits(limits);
    this.limits = limits;
    this.#random = random;
  }

  /** Unauthenticated connections pending now. */
  get pending(): number {
    return this.#pending;
  }

  /** Pending connections from `source` now. */
  pendingFrom(source: string): number {
    return this.#perSource.get(source) ?? 0;
  }

  /** Decides on a new connection from `source`; an admitted one takes a slot. */
  admit(source: string): Admission {
    const { maxPending, earlyDropStart, earlyDropProbability, maxPendingPerSource } = this.limits;
    if (this.#pending >= maxPending) return { admitted: false, reason: "full" };
    const fromSource = this.pendingFrom(source);
    if (fromSource >= maxPendingPerSource) return { admitted: false, reason: "source_full" };
    if (this.#pending >= earlyDropStart) {
      const span = maxPending - earlyDropStart;
      const above = (this.#pending - earlyDropStart) / span;
      const dropProbability = earlyDropProbability + (1 - earlyDropProbability) * above;
      if (this.#random() < dropProbability) return { admitted: false, reason: "early_drop" };
    }
    this.#pending++;
    this.#perSource.set(source, fromSource + 1);
    return { admitted: true };
  }

  /** Gives back the slot of an admitted connection from `source` (its handshake ended). */
  release(source: string): void {
    const fromSource = this.pendingFrom(source);
    if (fromSource === 0) return;
    this.#pending--;
    if (fromSource === 1) this.#perSource.delete(source);
    else this.#perSource.set(source, fromSource - 1);
  }
}

/** The source address of a `host:port` remote (IPv6 hosts keep their colons). */
export function sourceAddress(remote: string): string {
  const at = remote.lastIndexOf(":");
  return at > 0 ? remote.slice(0, at) : remote;
}
