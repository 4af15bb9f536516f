/** What the keepalive timer should do now: nothing, send a PING, or declare the link dead. */
export type KeepaliveAction = "none" | "ping" | "dead";

/**
 * The keepalive decision (`docs/PROTOCOL.md`, "Keepalive"), pure: after `idleTimeoutMs` of
 * silence the link is dead; after `keepaliveIntervalMs` of silence a PING goes out, at most
 * one per interval. Times in ms on one clock.
 *
 * @example
 * ```ts
 * import { keepaliveAction } from "./keepalive.ts";
 * const config = { keepaliveIntervalMs: 5000, idleTimeoutMs: 15000 };
 * console.assert(keepaliveAction(6000, 0, 0, config) === "ping");
 * console.assert(keepaliveAction(16000, 0, 12000, config) === "dead");
 * ```
 */
export function keepaliveAction(
  nowMs: number,
  lastReceivedMs: number,
  lastPingSentMs: number,
  config: { keepaliveIntervalMs: number; idleTimeoutMs: number },
): KeepaliveAction {
  const silent = nowMs - lastReceivedMs;
  if (silent >= config.idleTimeoutMs) return "dead";
  if (
    silent >= config.keepaliveIntervalMs && nowMs - lastPingSentMs >= config.keepaliveIntervalMs
  ) {
    return "ping";
  }
  return "none";
}
