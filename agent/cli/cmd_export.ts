import { serveReplica } from "../export/mod.ts";
import { formatNbdAddress, nbdUri, parseNbdAddress } from "../nbd/mod.ts";
import { parseCommand, required } from "./_args.ts";
import { ExitCode } from "./exit_codes.ts";

export const EXPORT_USAGE = `presync export NAME --store DIR --listen ADDR [options]

Serves the committed replica of volume NAME over NBD so a VM can boot from it, until
interrupted (SIGINT/SIGTERM). Read-only unless --writable.

  --store DIR         the destination's replica store
  --listen ADDR       HOST:PORT or unix:PATH; may be given more than once
  --writable          accept writes into a copy-on-write overlay; the replica is never written
  --overlay FILE      overlay file (default DIR/NAME.overlay; reused when it exists)
  --json              print the serving details as JSON

Example: presync export vm1 --store /srv/presync --listen unix:/run/vm1.sock --writable
         qemu-system-x86_64 -drive file=nbd+unix:///vm1?socket=/run/vm1.sock,format=raw`;

/** `presync export …`; resolves when `signal` aborts (default: SIGINT or SIGTERM). */
export async function cmdExport(args: string[], signal?: AbortSignal): Promise<number> {
  const { values, positionals } = parseCommand("export", args, {
    store: { type: "string" },
    listen: { type: "string", multiple: true },
    writable: { type: "boolean" },
    overlay: { type: "string" },
    json: { type: "boolean" },
  });
  const volume = required("export", "NAME", positionals[0]);
  const storeDir = required("export", "--store DIR", values.store);
  const listen = required(
    "export",
    "--listen ADDR",
    values.listen?.length ? values.listen : undefined,
  )
    .map(parseNbdAddress);
  const serving = await serveReplica({
    storeDir,
    volume,
    listen,
    writable: values.writable === true,
    overlayPath: values.overlay,
    onError: (err) => console.error(`presync export: connection ended: ${err}`),
  });
  try {
    const details = {
      volume,
      generation: serving.generation,
      writable: values.writable === true,
      overlay: serving.overlayPath ?? null,
      listen: serving.addresses.map(formatNbdAddress),
      uris: serving.addresses.map((a) => nbdUri(a, serving.export.name)),
    };
    if (values.json) console.log(JSON.stringify(details));
    else {
      console.log(
        `serving ${volume} (generation ${details.generation}, ` +
          `${details.writable ? `writable, overlay ${details.overlay}` : "read-only"}) at ` +
          details.uris.join(", "),
      );
    }
    await untilStopped(signal);
    return ExitCode.OK;
  } finally {
    await serving.close();
  }
}

function untilStopped(signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal) {
      if (signal.aborted) resolve();
      signal.addEventListener("abort", () => resolve(), { once: true });
      return;
    }
    const stop = () => {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      resolve();
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  });
}

/** The `export` entry of the command table in `agent/main.ts`. */
export const EXPORT_COMMAND = {
  run: (args: string[]): Promise<number> => cmdExport(args),
  usage: EXPORT_USAGE,
};
