import { tcpTransport } from "../../plugins/transport-tcp/mod.ts";
import { tlsTransport } from "../../plugins/transport-tls/mod.ts";
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

/** The transport the flags name: `tcp` (default) or `tls`. */
export async function transportFromFlags(
  values: FlagValues,
  role: "server" | "client",
): Promise<Transport> {
  const name = (values.transport as string | undefined) ?? "tcp";
  if (name === "tcp") return tcpTransport;
  if (name !== "tls") {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--transport must be tcp or tls: received ${name}`,
    );
  }
  const read = (flag: string) => Deno.readTextFile(values[flag] as string);
  if (role === "server") {
    if (!values["tls-cert"] || !values["tls-key"]) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        "--transport tls needs --tls-cert and --tls-key",
      );
    }
    return tlsTransport({ cert: await read("tls-cert"), key: await read("tls-key") });
  }
  if (values["tls-pin"]) return tlsTransport({ pinSha256: values["tls-pin"] as string });
  if (values["tls-ca"]) return tlsTransport({ caCerts: [await read("tls-ca")] });
  throw new PresyncError(
    ErrorCode.INVALID_ARGUMENT,
    "--transport tls needs --tls-pin SHA256 (the server certificate's fingerprint) or --tls-ca FILE",
  );
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
