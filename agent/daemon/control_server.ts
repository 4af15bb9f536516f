import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { errorReply } from "../net/sync_protocol.ts";
import { claimSocketPath } from "./control_socket.ts";

/** What the control endpoint can ask of a running agent or destination. */
export interface ControlHandlers {
  status(): unknown;
  metrics(): string;
  pause?(name: string): void | Promise<void>;
  resume?(name: string): void | Promise<void>;
  evacuate?(name: string): Promise<unknown>;
  /** Migrates a volume's VM (`presync migrate`); `body` is the client's JSON request. */
  migrate?(name: string, body: Record<string, unknown>): Promise<unknown>;
  verify?(name: string): Promise<{ ok: boolean }>;
  /** The destination's volumes (`presync volumes`). */
  volumes?(): Promise<unknown>;
  /** Deletes a volume at the destination (`presync delete`). */
  delete?(name: string): Promise<unknown>;
  /**
   * Serves volume `name` until `signal` aborts (the client went away), reporting progress
   * through `emit`; `body` is the client's JSON request.
   */
  export?(
    name: string,
    body: Record<string, unknown>,
    signal: AbortSignal,
    emit: (event: Record<string, unknown>) => void,
  ): Promise<void>;
}

/** Options of {@linkcode serveControl}. */
export interface ControlOptions {
  /** The unix socket to serve on (see `controlSocketPath`); made 0600 in a 0700 directory. */
  socket: string;
  /** Also serve `GET /metrics` (and nothing else) over TCP here, for Prometheus. */
  metricsListen?: { hostname: string; port: number };
}

/** A running control endpoint. */
export interface ControlEndpoint {
  /** The control socket's path. */
  socket: string;
  /** The bound `/metrics` TCP address, when `metricsListen` was given. */
  metricsAddr: { hostname: string; port: number } | null;
  /** Stops serving and removes the socket. */
  close(): Promise<void>;
}

/**
 * Serves the control endpoint on a unix socket that only this user can reach (the socket is
 * 0600 in a 0700 directory: the file permissions are the authentication, as for other local
 * daemons' sockets): `GET /status`, `GET /metrics` (Prometheus text),
 * `GET /volumes`, `POST /volumes/NAME/{pause,resume,evacuate,verify,delete}`, and `POST /volumes/NAME/export`,
 * whose answer is a stream of JSON lines that lasts as long as the export (closing the
 * request stops it). A stale socket left by a killed daemon is replaced; a live daemon's is
 * not taken (`ADDRESS_IN_USE`); a planted file or symlink is refused (`CONTROL_UNSAFE`).
 * With `metricsListen`, `/metrics` alone is also served read-only over TCP.
 */
export async function serveControl(
  options: ControlOptions,
  handlers: ControlHandlers,
  log: Logger,
): Promise<ControlEndpoint> {
  const claim = await claimSocketPath(options.socket);
  // Aborted by close(): requests still waiting (an evacuation) are answered at once, so
  // stopping the daemon never waits for them.
  const closing = new AbortController();
  if (claim === "stale") log("warn", "stale_control_socket_replaced", { socket: options.socket });
  const server = Deno.serve(
    { path: options.socket, onListen: () => {} },
    (req) => handle(req, handlers, closing.signal),
  );
  await Deno.chmod(options.socket, 0o600);
  let metrics: Deno.HttpServer<Deno.NetAddr> | null = null;
  try {
    if (options.metricsListen) metrics = serveMetrics(options.metricsListen, handlers);
  } catch (err) {
    await server.shutdown();
    throw err;
  }
  log("info", "control_listening", {
    socket: options.socket,
    metrics: metrics ? `${metrics.addr.hostname}:${metrics.addr.port}` : undefined,
  });
  return {
    socket: options.socket,
    metricsAddr: metrics ? { hostname: metrics.addr.hostname, port: metrics.addr.port } : null,
    async close() {
      closing.abort();
      await Promise.all([server.shutdown(), metrics?.shutdown()]);
    },
  };
}

/** `GET /metrics` over TCP for Prometheus: read-only, every other request is refused. */
function serveMetrics(
  address: { hostname: string; port: number },
  handlers: ControlHandlers,
): Deno.HttpServer<Deno.NetAddr> {
  try {
    return Deno.serve({ ...address, onListen: () => {} }, (req) => {
      if (req.method === "GET" && new URL(req.url).pathname === "/metrics") {
        return metrics(handlers);
      }
      return Response.json({
        ok: false,
        code: ErrorCode.INVALID_ARGUMENT,
        message: "only GET /metrics is served here; the control endpoint is the unix socket",
      }, { status: 404 });
    });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      throw new PresyncError(
        ErrorCode.ADDRESS_IN_USE,
        `--metrics-listen ${address.hostname}:${address.port}: the address is in use by another ` +
          `process`,
        { cause: err },
      );
    }
    throw err;
  }
}

function metrics(handlers: ControlHandlers): Response {
  return new Response(handlers.metrics(), {
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
  });
}

/**
 * The `--metrics-listen [HOST:]PORT` address: loopback unless a host is given (the metrics
 * name volumes; expose them beyond the host deliberately).
 */
export function parseMetricsListen(text: string): { hostname: string; port: number } {
  const match = /^(?:(.*):)?(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--metrics-listen must be [HOST:]PORT, e.g. 9732 or 127.0.0.1:9732: received ${
        JSON.stringify(text)
      }`,
    );
  }
  const hostname = (match[1] ?? "127.0.0.1").replace(/^\[(.*)\]$/, "$1");
  return { hostname: hostname === "" ? "127.0.0.1" : hostname, port };
}

/** Rejects once `signal` aborts: the daemon is stopping. */
function stopping(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    const fail = () =>
      reject(
        new PresyncError(ErrorCode.CONNECTION_LOST, "the daemon is stopping", { retryable: true }),
      );
    if (signal.aborted) fail();
    signal.addEventListener("abort", fail, { once: true });
  });
}

async function handle(
  req: Request,
  handlers: ControlHandlers,
  closing: AbortSignal,
): Promise<Response> {
  const url = new URL(req.url);
  try {
    if (req.method === "GET" && url.pathname === "/metrics") return metrics(handlers);
    if (req.method === "GET" && url.pathname === "/status") {
      return Response.json(await handlers.status());
    }
    if (req.method === "GET" && url.pathname === "/volumes" && handlers.volumes) {
      return Response.json(await handlers.volumes());
    }
    const exporting = /^\/volumes\/([^/]+)\/export$/.exec(url.pathname);
    if (req.method === "POST" && exporting && handlers.export) {
      return await streamExport(req, decodeURIComponent(exporting[1]), handlers.export);
    }
    const migrating = /^\/volumes\/([^/]+)\/migrate$/.exec(url.pathname);
    if (req.method === "POST" && migrating && handlers.migrate) {
      const body = await req.json().catch(() => null);
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new PresyncError(
          ErrorCode.INVALID_ARGUMENT,
          "the migrate request must be a JSON object",
        );
      }
      const result = await Promise.race([
        handlers.migrate(decodeURIComponent(migrating[1]), body),
        stopping(closing),
      ]);
      return Response.json({ ok: true, result });
    }
    const match = /^\/volumes\/([^/]+)\/(pause|resume|evacuate|verify|delete)$/.exec(
      url.pathname,
    );
    if (req.method === "POST" && match) {
      const [, name, action] = match;
      const handler = handlers[action as "pause" | "resume" | "evacuate" | "verify" | "delete"];
      if (!handler) {
        throw new PresyncError(ErrorCode.INVALID_ARGUMENT, `this process does not ${action}`);
      }
      const result = await Promise.race([handler(decodeURIComponent(name)), stopping(closing)]);
      return Response.json({ ok: true, result: result ?? null });
    }
    return Response.json({
      ok: false,
      code: ErrorCode.INVALID_ARGUMENT,
      message: `no such endpoint: ${req.method} ${url.pathname}`,
    }, { status: 404 });
  } catch (err) {
    return Response.json(errorReply(err), { status: 500 });
  }
}

/** Runs an export for as long as the request lasts, its events as JSON lines. */
async function streamExport(
  req: Request,
  name: string,
  run: NonNullable<ControlHandlers["export"]>,
): Promise<Response> {
  const body = await req.json().catch(() => null);
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new PresyncError(ErrorCode.INVALID_ARGUMENT, "the export request must be a JSON object");
  }
  // The body stream is cancelled when the client goes away: that stops the export.
  const stop = new AbortController();
  const encoder = new TextEncoder();
  let lines!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({
    start: (controller) => void (lines = controller),
    cancel: () => stop.abort(),
  });
  const emit = (event: Record<string, unknown>) => {
    try {
      lines.enqueue(encoder.encode(JSON.stringify(event) + "\n"));
    } catch {
      // The client went away; the abort ends the export.
    }
  };
  run(name, body, stop.signal, emit)
    .catch((err) => emit(errorReply(err)))
    .finally(() => {
      stop.abort();
      try {
        lines.close();
      } catch {
        // Already closed by the client.
      }
    });
  return new Response(stream, { headers: { "content-type": "application/x-ndjson" } });
}
