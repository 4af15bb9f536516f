import { setImmediate } from "node:timers";

/**
 * Bytes of CPU work (hashing, compression, verification) between two yields: about 0.2 ms
 * at BLAKE3 speed, so other work in the process waits that long at most.
 */
export const YIELD_EVERY_BYTES = 256 * 1024;

/**
 * Lets the event loop run I/O callbacks and timers (an NBD server answering the VM, session
 * keepalives) in the middle of long CPU work. `setTimeout(0)` would do the same but costs
 * about 2 ms per call in Deno (nested-timer clamping); `setImmediate` costs microseconds.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
