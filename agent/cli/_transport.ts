import { ErrorCode, PresyncError } from "../errors.ts";
import { type Logger, sessionLoggerOf } from "../log.ts";
import { DEFAULT_TRANSPORT, TRANSPORTS } from "../registry/mod.ts";
import { checkSessionOptions } from "../wire/session_options.ts";
import { stripedTransport } from "../wire/striped_transport.ts";
import { STRIPE_MAX_MEMBERS } from "../wire/stripe_record.ts";
import type { Transport } from "../wire/transport.ts";
import type { FlagValues } from "./_config.ts";

/** Flags every networked command shares for choosing its transport. */
export const TRANSPORT_FLAGS = {
  transport: { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-ca": { type: "string" },
  "tls-pin": { type: "string" },
} as const;

/** Flags `serve` and `agent` share: key, control endpoint, config file, logs, transport. */
export const DAEMON_FLAGS = {
  "key-file": { type: "string" },
  control: { type: "string" },
  config: { type: "string" },
  "log-format": { type: "string" },
  "idle-timeout": { type: "string" },
  ...TRANSPORT_FLAGS,
} as const;

/** What {@linkcode transportFromFlags} needs besides the flags. */
export interface TransportContext {
  /**
   * Server: the store directory (`--state` for an `rbd:` store); its `.tls/` holds the
   * certificate made on first start.
   */
  storeDir?: string;
  /** Client: the state directory; its `known_servers.json` holds the pinned fingerprints. */
  stateDir?: string;
  /** Where the certificate and pinning lines go. */
  log: Logger;
  /** The pre-shared key: every member of a stripe proves it before it joins. */
  psk: Uint8Array;
}

/**
 * How a command stripes: the agent's `--stripes N` (N connections per session, 1 to 16;
 * default 1, no striping), serve's `--striped` (accept striped agents only).
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` naming the flag
 */
export function stripesFromFlags(values: FlagValues, role: "server" | "client"): number {
  if (role === "server") return values.striped === true ? STRIPE_MAX_MEMBERS : 1;
  const text = values.stripes as string | undefined;
  if (text === undefined) return 1;
  const count = Number(text);
  if (!Number.isInteger(count) || count < 1 || count > STRIPE_MAX_MEMBERS) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--stripes must be a whole number of connections from 1 to ${STRIPE_MAX_MEMBERS}: ` +
        `received ${JSON.stringify(text)}`,
    );
  }
  return count;
}

/**
 * The transport the flags name, looked up in the registry (`agent/registry/`): `tls`
 * (default), `tcp` or `quic`, with its certificate settings (see each entry's doc); wrapped
 * in striping when the agent gives `--stripes N` above 1 or serve `--striped`.
 *
 * @throws {PresyncError} `PLUGIN_UNKNOWN` (exit 2) listing the transports for an unknown
 *   name; `INVALID_ARGUMENT` for trust settings that do not fit the transport
 */
export async function transportFromFlags(
  values: FlagValues,
  role: "server" | "client",
  context: TransportContext,
): Promise<Transport> {
  const plugin = TRANSPORTS.get((values.transport as string | undefined) ?? DEFAULT_TRANSPORT);
  const stripes = stripesFromFlags(values, role);
  const settings = {
    certFile: values["tls-cert"] as string | undefined,
    keyFile: values["tls-key"] as string | undefined,
    caFile: values["tls-ca"] as string | undefined,
    pinSha256: values["tls-pin"] as string | undefined,
    storeDir: context.storeDir,
    stateDir: context.stateDir,
    log: context.log,
  };
  const inner = role === "server" ? await plugin.server(settings) : await plugin.client(settings);
  if (role === "client" && stripes === 1) return inner;
  if (role === "server" && values.striped !== true) return inner;
  return stripedTransport(inner, {
    psk: context.psk,
    members: stripes,
    logger: sessionLoggerOf(context.log),
  });
}

/**
 * Session timing from `--idle-timeout SECONDS` (1 to 3600, fractions allowed): the idle
 * timeout in whole ms, keepalive pings at a third of it (at least 200 ms). Checked here, so a
 * bad value stops the command at startup instead of failing every session.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` naming the flag
 */
export function sessionOptionsFromFlags(
  values: FlagValues,
): { idleTimeoutMs?: number; keepaliveIntervalMs?: number } {
  const text = values["idle-timeout"] as string | undefined;
  if (text === undefined) return {};
  const seconds = Number(text);
  if (!(seconds >= 1 && seconds <= 3600)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--idle-timeout must be 1 to 3600 seconds: received ${text}`,
    );
  }
  const idleTimeoutMs = Math.round(seconds * 1000);
  const options = {
    idleTimeoutMs,
    keepaliveIntervalMs: Math.max(200, Math.round(idleTimeoutMs / 3)),
  };
  checkSessionOptions(options);
  return options;
}
