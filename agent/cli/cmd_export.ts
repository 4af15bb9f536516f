import { serveReplica } from "../export/mod.ts";
import { formatNbdAddress, nbdUri, parseNbdAddress } from "../nbd/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { errorFromReply } from "../net/sync_protocol.ts";
import { parseCommand, required } from "./_args.ts";
import { connectControl } from "./_control_client.ts";
import { storeFromFlag } from "./_store.ts";
import { ExitCode } from "./exit_codes.ts";

export const EXPORT_USAGE = `presync export NAME --store DIR --listen ADDR [options]
presync export NAME --postcopy --listen ADDR [options]

Serves the committed replica of volume NAME over NBD so a VM can boot from it, until
interrupted (SIGINT/SIGTERM). Read-only unless --writable.

With --postcopy the export runs inside the destination daemon (\`presync serve\`, reached on
its control endpoint): it waits for the source to start evacuating NAME, then serves at
once — blocks of the final generation that have not arrived are fetched from the source on
demand, ahead of the bulk transfer — and the replica cannot change while it is exported.

  --store DIR|rbd:POOL  the destination's replica store (without --postcopy)
  --state DIR         local directory of an rbd: store (as given to serve)
  --generation G      serve committed generation G, kept as snapshot presync-gG by an
                      rbd: store (serve --keep N; presync volumes lists them)
  --listen ADDR       HOST:PORT or unix:PATH; may be given more than once
  --writable          accept writes into a copy-on-write overlay; the replica is never written
  --overlay FILE      overlay file (default DIR/NAME.overlay; reused when it exists)
  --postcopy          serve from the running daemon during the evacuation (see above)
  --early             with --postcopy: open the socket at once, before the evacuation starts,
                      so a destination QEMU started with -incoming can open its disk; its
                      requests wait for the switchover (the final cut), up to 120 s
  --incoming PATH     with --early: the destination QEMU's migration socket (started with
                      -incoming unix:PATH); a source's presync migrate NAME arrives there
  --control NAME|PATH the daemon's control socket (default: serve, in /run/presync/serve
                      for root)
  --json              print the serving details (and postcopy events) as JSON lines

Example: presync export vm1 --store /srv/presync --listen unix:/run/vm1.sock --writable
         qemu-system-x86_64 -drive file=nbd+unix:///vm1?socket=/run/vm1.sock,format=raw`;

/** `presync export …`; resolves when `signal` aborts (default: SIGINT or SIGTERM). */
export async function cmdExport(args: string[], signal?: AbortSignal): Promise<number> {
  const { values, positionals } = parseCommand("export", args, {
    store: { type: "string" },
    state: { type: "string" },
    generation: { type: "string" },
    listen: { type: "string", multiple: true },
    writable: { type: "boolean" },
    overlay: { type: "string" },
    postcopy: { type: "boolean" },
    early: { type: "boolean" },
    incoming: { type: "string" },
    control: { type: "string" },
    json: { type: "boolean" },
  });
  const volume = required("export", "NAME", positionals[0]);
  const listenText = required(
    "export",
    "--listen ADDR",
    values.listen?.length ? values.listen : undefined,
  );
  const listen = listenText.map(parseNbdAddress);
  if (values.incoming && !values.early) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      "--incoming needs --early (the destination QEMU opens its disk before the switchover)",
    );
  }
  if (values.early && !values.postcopy) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      "--early serves a final generation still to come: it needs --postcopy",
    );
  }
  if (values.postcopy) {
    if (values.store) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        "--postcopy runs the export inside the daemon, which has its own store: drop --store",
      );
    }
    return await exportThroughDaemon(
      volume,
      {
        listen: listenText,
        writable: values.writable === true,
        overlay: values.overlay,
        early: values.early === true,
        incoming: values.incoming,
      },
      values,
      signal,
    );
  }
  const store = storeFromFlag({
    store: required("export", "--store DIR", values.store),
    state: values.state,
  });
  const serving = await serveReplica({
    store,
    volume,
    listen,
    writable: values.writable === true,
    overlayPath: values.overlay,
    generation: values.generation === undefined ? undefined : parseGeneration(values.generation),
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

/**
 * `--postcopy`: asks the daemon to run the export and prints its events until interrupted
 * (which stops the export) or until the daemon ends it.
 */
async function exportThroughDaemon(
  volume: string,
  body: {
    listen: string[];
    writable: boolean;
    overlay?: string;
    early: boolean;
    incoming?: string;
  },
  flags: { control?: string; json?: boolean },
  signal?: AbortSignal,
): Promise<number> {
  const abort = new AbortController();
  untilStopped(signal).then(() => abort.abort());
  using client = await connectControl({ role: "serve", control: flags.control });
  const response = await client.request(
    "POST",
    `/volumes/${encodeURIComponent(volume)}/export`,
    { body, signal: abort.signal },
  );
  if (response.status !== 200 || !response.body) {
    throw errorFromReply(await response.json(), "daemon");
  }
  try {
    const lines = response.body.pipeThrough(new TextDecoderStream());
    let buffered = "";
    for await (const chunk of lines) {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const event = JSON.parse(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
        if (event.ok === false) throw errorFromReply(event, "daemon");
        console.log(flags.json ? JSON.stringify(event) : describe(event));
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  }
  return ExitCode.OK;
}

/** One export event for people. */
function describe(event: Record<string, unknown>): string {
  switch (event.event) {
    case "listening":
      return `listening for ${event.volume} at ${(event.uris as string[]).join(", ")}; ` +
        `requests wait for the switchover`;
    case "waiting":
      return `waiting for the source to start evacuating ${event.volume}…`;
    case "serving":
      return `serving ${event.volume} (final generation ${event.generation}` +
        `${event.postcopy ? ", postcopy: missing blocks come from the source" : ""}, ` +
        `${event.writable ? `writable, overlay ${event.overlay}` : "read-only"}) at ` +
        (event.uris as string[]).join(", ");
    case "committed":
      return `final generation of ${event.volume} committed: ${event.fetchedBlocks} blocks ` +
        `were fetched on demand` +
        (Number(event.differing) > 0
          ? `; WARNING: ${event.differing} blocks served differ from the committed ones`
          : "");
    default:
      return JSON.stringify(event);
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

/** A `--generation` value: a committed generation, 1 or more. */
function parseGeneration(text: string): number {
  const generation = /^[0-9]{1,15}$/.test(text) ? Number(text) : NaN;
  if (!(generation >= 1)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--generation must be a committed generation number (1 or more): received ${
        JSON.stringify(text)
      }`,
    );
  }
  return generation;
}
