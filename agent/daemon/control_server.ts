import { blake3Keyed } from "../core/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { toHex } from "../hex.ts";
import type { Logger } from "../log.ts";
import { constantTimeEqual } from "../bytes.ts";
import { errorReply } from "../net/sync_protocol.ts";

/** What the control endpoint can ask of a running agent or destination. */
export interface ControlHandlers {
  status(): unknown;
  metrics(): string;
  pause?(name: string): void;
  resume?(name: string): void;
  evacuate?(name: string): Promise<unknown>;
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

/** The bearer token for the control endpoint: keyed BLAKE3 of a fixed label under the PSK. */
export function controlToken(psk: Uint8Array): string {
  return toHex(blake3Keyed(psk, new TextEncoder().encode("presync control endpoint v1")));
}

/**
 * Where a running agent leaves its control token for local commands (`presync status`…),
 * readable by its user only: same key, no flag needed on the command line.
 */
export function tokenPath(port: number): string {
  const dir = Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp";
  return `${dir}/presync-control-${port}.token`;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/**
 * Serves the control endpoint on a loopback address: `GET /status`, `GET /metrics`
 * (Prometheus text, no token needed), `POST /volumes/NAME/{pause,resume,evacuate,verify}`,
 * and `POST /volumes/NAME/export`, whose answer is a stream of JSON lines that lasts as long
 * as the export (closing the request stops it). Every request but `/metrics` needs
 * `Authorization: Bearer <token>`.
 */
export async function serveControl(
  address: { hostname: string; port: number },
  psk: Uint8Array,
  handlers: ControlHandlers,
  log: Logger,
): Promise<{ port: number; close(): Promise<void> }> {
  if (!LOOPBACK.has(address.hostname)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `--control must be a loopback address (127.0.0.1, ::1 or localhost): received ${address.hostname}`,
    );
  }
  const token = new TextEncoder().encode(controlToken(psk));
  const server = Deno.serve(
    { hostname: address.hostname, port: address.port, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname === "/metrics") {
        return new Response(handlers.metrics(), {
          headers: { "content-type": "text/plain; version=0.0.4" },
        });
      }
      const given = new TextEncoder().encode(
        (req.headers.get("authorization") ?? "").replace(/^Bearer /, ""),
      );
      if (!constantTimeEqual(given, token)) {
        log("warn", "control_refused", { path: url.pathname });
        return Response.json({
          ok: false,
          code: ErrorCode.AUTH_FAILED,
          message: "wrong or missing control token",
        }, {
          status: 401,
        });
      }
      try {
        if (req.method === "GET" && url.pathname === "/status") {
          return Response.json(
            await handlers.status(),
          );
        }
        if (req.method === "GET" && url.pathname === "/volumes" && handlers.volumes) {
          return Response.json(await handlers.volumes());
        }
        const exporting = /^\/volumes\/([^/]+)\/export$/.exec(url.pathname);
        if (req.method === "POST" && exporting && handlers.export) {
          return await streamExport(req, decodeURIComponent(exporting[1]), handlers.export);
        }
        const match = /^\/volumes\/([^/]+)\/(pause|resume|evacuate|verify|delete)$/.exec(
          url.pathname,
        );
        if (req.method === "POST" && match) {
          const [, name, action] = match;
          const handler = handlers[action as "pause" | "resume" | "evacuate" | "verify" | "delete"];
          if (!handler) {
            throw new PresyncError(
              ErrorCode.INVALID_ARGUMENT,
              `this process does not ${action}`,
            );
          }
          const result = await handler(decodeURIComponent(name));
          return Response.json({ ok: true, result: result ?? null });
        }
        return Response.json({
          ok: false,
          code: ErrorCode.INVALID_ARGUMENT,
          message: "no such endpoint",
        }, {
          status: 404,
        });
      } catch (err) {
        return Response.json(errorReply(err), { status: 500 });
      }
    },
  );
  const port = server.addr.port;
  const path = tokenPath(port);
  await Deno.writeTextFile(path, new TextDecoder().decode(token), { mode: 0o600 });
  await Deno.chmod(path, 0o600);
  return {
    port,
    async close() {
      await server.shutdown();
      await Deno.remove(path).catch(() => {});
    },
  };
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
