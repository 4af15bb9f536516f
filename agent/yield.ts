import { setImmediate } from "node:timers";

/**
 * Lets the event loop run I/O callbacks and timers (an NBD server answering the VM, session
 * keepalives) in the middle of long CPU work. `setTimeout(0)` would do the same but costs
 * about 2 ms per call in Deno (nested-timer clamping); `setImmediate` costs microseconds.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
