import { tcpTransport } from "../../plugins/transport-tcp/mod.ts";
import {
  certificateFingerprint,
  KnownServersFile,
  loadOrCreateServerCertificate,
  type PinStore,
  tlsTransport,
} from "../../plugins/transport-tls/mod.ts";
import type { Logger } from "../log.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { checkSessionOptions } from "../wire/session_options.ts";
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
}

/** The directory under the store where `serve` keeps the certificate it made. */
export const SERVER_TLS_DIR = ".tls";
/** The file under the agent's state where it pins servers' certificates. */
export const KNOWN_SERVERS_FILE = "known_servers.json";

/** Pins through `store`, logging the first pin of each server. */
function loggingPins(store: PinStore, log: Logger): PinStore {
  return {
    location: store.location,
    get: (server) => store.get(server),
    pin: async (server, fingerprint) => {
      await store.pin(server, fingerprint);
      log("info", "tls_pinned", { server, fingerprint, file: store.location });
    },
  };
}

/**
 * The transport the flags name: `tls` (default) or `tcp` (only when asked for). A TLS server
 * uses `--tls-cert`/`--tls-key`, or else the self-signed certificate in `<store>/.tls/`, made
 * on first start; its fingerprint is logged (`tls_certificate`). A TLS client trusts
 * `--tls-pin`, or `--tls-ca`, or else pins the server's certificate on first contact in
 * `<state>/known_servers.json`.
 */
export async function transportFromFlags(
  values: FlagValues,
  role: "server" | "client",
  context: TransportContext,
): Promise<Transport> {
  const name = (values.transport as string | undefined) ?? "tls";
  if (name === "tcp") return tcpTransport;
  if (name !== "tls") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--transport must be tls or tcp: received ${name}`,
    );
  }
  const read = (flag: string) => Deno.readTextFile(values[flag] as string);
  if (role === "server") {
    if (Boolean(values["tls-cert"]) !== Boolean(values["tls-key"])) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        "--tls-cert and --tls-key go together (or give neither: serve then makes a " +
          "self-signed certificate in the store)",
      );
    }
    if (values["tls-cert"]) {
      const cert = await read("tls-cert");
      context.log("info", "tls_certificate", {
        fingerprint: await certificateFingerprint(cert),
        cert: values["tls-cert"],
      });
      return tlsTransport({ cert, key: await read("tls-key") });
    }
    const own = await loadOrCreateServerCertificate(`${context.storeDir}/${SERVER_TLS_DIR}`);
    context.log("info", "tls_certificate", {
      fingerprint: own.fingerprint,
      cert: own.certPath,
      created: own.created,
      hint: "agents pin this certificate on first contact; or give them --tls-pin " +
        own.fingerprint,
    });
    return tlsTransport({ cert: own.certPem, key: own.keyPem });
  }
  if (values["tls-pin"]) return tlsTransport({ pinSha256: values["tls-pin"] as string });
  if (values["tls-ca"]) return tlsTransport({ caCerts: [await read("tls-ca")] });
  const known = new KnownServersFile(`${context.stateDir}/${KNOWN_SERVERS_FILE}`);
  return tlsTransport({ pinStore: loggingPins(known, context.log) });
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
