import { parseMetricsListen, serveControl } from "../daemon/control_server.ts";
import { controlSocketPath } from "../daemon/control_socket.ts";
import { counters } from "../daemon/counters.ts";
import { DestinationDaemon, type ExportRequest } from "../daemon/destination_daemon.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { parseNbdAddress } from "../nbd/mod.ts";
import { parseHostPort, readKey } from "../key_file.ts";
import { createLogger } from "../log.ts";
import { renderMetrics } from "../daemon/metrics.ts";
import { STORES, TRANSPORTS } from "../registry/mod.ts";
import { VERSION } from "../version.ts";
import { parseCommand } from "./_args.ts";
import { loadSettings, NUMERIC_FLAGS } from "./_config.ts";
import { localStateDir, storeFromFlag } from "./_store.ts";
import { logUnhandledRejections } from "./_guard.ts";
import { DAEMON_FLAGS, sessionOptionsFromFlags, transportFromFlags } from "./_transport.ts";
import { ExitCode } from "./exit_codes.ts";

export const SERVE_USAGE = `presync serve --store DIR --listen HOST:PORT --key-file FILE [options]

Runs the destination agent: accepts authenticated sessions from source agents and keeps
their replicas in DIR (one subdirectory per volume; a new volume is created on first sync).

  --store DIR|NAME:ARG   where replicas live: a directory, or a back end by name
                         (${STORES.entries.map((e) => `${e.name}:${e.argument}`).join(", ")})
  --state DIR            a store that is not a directory (rbd:): local directory for its
                         staging areas, locks, export overlays and TLS certificate (DIR/.tls/)
  --keep N               committed generations kept (default 1): rbd snapshots presync-gN,
                         directory undo logs VOL/undo/gN; older ones go after each commit
  --control NAME|PATH    control socket (status, /metrics, postcopy exports): a name in the
                         runtime directory (/run/presync/serve for root) or a path
                         (default: serve)
  --metrics-listen [HOST:]PORT  also serve /metrics over TCP for Prometheus (host default
                         127.0.0.1)
  --transport ${TRANSPORTS.choices()}
                         default tls: with --tls-cert FILE --tls-key FILE, or else a
                         self-signed certificate made in DIR/.tls/ on first start (its
                         SHA-256 fingerprint is logged: tls_certificate); tcp is plain
                         (authenticated, not encrypted); quic (UDP) uses the same
                         certificate: give agents a copy of DIR/.tls/cert.pem as --tls-ca
  --striped              accept agents that stripe (agent --stripes N) and only those
  --idle-timeout SECONDS a silent link is declared dead after this (default 15)
  --log-format json|text default text
  --config FILE          JSON object with any of these flags as keys, e.g.
                         {"store": "/srv/presync", "listen": "0.0.0.0:7700", "idle-timeout": 15}`;

const OPTIONS = {
  store: { type: "string" },
  state: { type: "string" },
  keep: { type: "string" },
  listen: { type: "string" },
  "metrics-listen": { type: "string" },
  striped: { type: "boolean" },
  ...DAEMON_FLAGS,
} as const;

/** `presync serve`: runs until SIGINT or SIGTERM. */
export async function cmdServe(args: string[]): Promise<number> {
  const parsed = parseCommand("serve", args, OPTIONS);
  const settings = await loadSettings(parsed.values, OPTIONS, new Set([...NUMERIC_FLAGS, "keep"]));
  const values = settings.values;
  const log = createLogger(settings.choice("log-format", ["text", "json"] as const, "text"));
  logUnhandledRejections(log);
  const socket = controlSocketPath("serve", settings.text("control"), "serve");
  const metricsText = settings.text("metrics-listen");
  const metricsListen = metricsText === undefined ? undefined : parseMetricsListen(metricsText);
  const listen = parseHostPort("listen", settings.need("serve", "listen", "HOST:PORT"));
  const psk = await readKey(settings.need("serve", "key-file", "FILE"));
  const storeFlags = {
    store: settings.need("serve", "store", "DIR"),
    state: settings.text("state"),
    keep: settings.text("keep"),
  };
  const store = storeFromFlag(storeFlags);
  const storeDir = localStateDir(storeFlags);
  const daemon = new DestinationDaemon({
    store,
    listen,
    transport: await transportFromFlags(values, "server", {
      storeDir,
      log,
      psk,
    }),
    psk,
    log,
    session: sessionOptionsFromFlags(values),
  });
  try {
    daemon.start();
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      throw new PresyncError(
        ErrorCode.ADDRESS_IN_USE,
        `${settings.name("listen")} ${listen.hostname}:${listen.port}: the address is in use ` +
          `(another presync serve running?): stop it or choose another --listen`,
        { cause: err },
      );
    }
    throw err;
  }
  let control;
  try {
    control = await serveControl(
      { socket, metricsListen },
      {
        status: async () => ({ version: VERSION, ...(await daemon.status()) }),
        metrics: () => daemon.metrics() + renderMetrics(counters.families()),
        volumes: () => daemon.volumes(),
        delete: (name) => daemon.delete(name),
        export: (name, body, signal, emit) =>
          daemon.export(name, exportRequestOf(body), signal, emit),
      },
      log,
    );
  } catch (err) {
    daemon.stop();
    throw err;
  }
  await waitForSignal();
  log("info", "stopping", {});
  daemon.stop();
  await control.close();
  return ExitCode.OK;
}

/** The export request a `presync export --postcopy` sent (see cmd_export.ts). */
function exportRequestOf(body: Record<string, unknown>): ExportRequest {
  const listen = Array.isArray(body.listen) ? body.listen : [];
  if (listen.length === 0) {
    throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "export needs at least one listen address");
  }
  if (body.overlay !== undefined && typeof body.overlay !== "string") {
    throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "the overlay must be a file path");
  }
  return {
    listen: listen.map((a) => parseNbdAddress(String(a))),
    writable: body.writable === true,
    overlayPath: body.overlay,
    early: body.early === true,
    incoming: typeof body.incoming === "string" ? body.incoming : undefined,
  };
}

/** Resolves on SIGINT or SIGTERM. */
export function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      Deno.removeSignalListener("SIGINT", done);
      Deno.removeSignalListener("SIGTERM", done);
      resolve();
    };
    Deno.addSignalListener("SIGINT", done);
    Deno.addSignalListener("SIGTERM", done);
  });
}
