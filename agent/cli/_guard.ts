import type { Logger } from "../log.ts";

/**
 * Keeps a long-running daemon alive when a promise is rejected without a handler (a bug:
 * every failure should reach the reconnect loop): logs it as an error, with its stack, and
 * goes on instead of exiting, so one missed handler cannot take a site's replication down.
 */
export function logUnhandledRejections(log: Logger): void {
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    const reason = event.reason;
    log("error", "unhandled_rejection", {
      error: reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason),
      stack: reason instanceof Error ? reason.stack : undefined,
    });
  });
}
