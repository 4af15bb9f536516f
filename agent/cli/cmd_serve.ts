import { serveControl } from "../daemon/control_server.ts";
import { DestinationDaemon, type ExportRequest } from "../daemon/destination_daemon.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { parseNbdAddress } from "../nbd/mod.ts";
import { parseHostPort, readKey } from "../key_file.ts";
import { createLogger } from "../log.ts";
import { parseCommand, required } from "./_args.ts";
import { withConfigFile } from "./_config.ts";
import { logUnhandledRejections } from "./_guard.ts";
import { DAEMON_FLAGS, sessionOptionsFromFlags, transportFromFlags } from "./_transport.ts";
import { ExitCode } from "./exit_codes.ts";

export const SERVE_USAGE = `presync serve --store DIR --listen HOST:PORT --key-file FILE [options]

Runs the destination agent: accepts authenticated sessions from source agents and keeps
their replicas in DIR (one subdirectory per volume; a new volume is created on first sync).

  --control HOST:PORT    loopback control endpoint (status, /metrics, postcopy exports);
                         default 127.0.0.1:7733
  --transport tls|tcp    default tls: with --tls-cert FILE --tls-key FILE, or else a
                         self-signed certificate made in DIR/.tls/ on first start (its
                         SHA-256 fingerprint is logged: tls_certificate); tcp is plain
                         (authenticated, not encrypted)
  --idle-timeout SECONDS a silent link is declared dead after this (default 15)
  --log-format json|text default text
  --config FILE          JSON object with any of these flags`;

const OPTIONS = {
  store: { type: "string" },
  listen: { type: "string" },
  ...DAEMON_FLAGS,
} as const;

/** `presync serve`: runs until SIGINT or SIGTERM. */
export async function cmdServe(args: string[]): Promise<number> {
  const parsed = parseCommand("serve", args, OPTIONS);
  const values = await withConfigFile(parsed.values, Object.keys(OPTIONS));
  const log = createLogger(values["log-format"] === "json" ? "json" : "text");
  logUnhandledRejections(log);
  const psk = await readKey(required("serve", "--key-file FILE", values["key-file"] as string));
  const storeDir = required("serve", "--store DIR", values.store as string);
  const daemon = new DestinationDaemon({
    storeDir,
    listen: parseHostPort(
      "listen",
      required("serve", "--listen HOST:PORT", values.listen as string),
    ),
    transport: await transportFromFlags(values, "server", { storeDir, log }),
    psk,
    log,
    session: sessionOptionsFromFlags(values),
  });
  daemon.start();
  const control = await serveControl(
    parseHostPort("control", (values.control as string) ?? "127.0.0.1:7733"),
    psk,
    {
      status: () => daemon.status(),
      metrics: () => daemon.metrics(),
      export: (name, body, signal, emit) =>
        daemon.export(name, exportRequestOf(body), signal, emit),
    },
    log,
  );
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
