import assert from "node:assert/strict";
import { keepaliveAction } from "./keepalive.ts";

const config = { keepaliveIntervalMs: 100, idleTimeoutMs: 300 };

Deno.test("keepalive: silence earns a PING per interval, then the link is declared dead", () => {
  assert.equal(keepaliveAction(50, 0, 0, config), "none");
  assert.equal(keepaliveAction(100, 0, 0, config), "ping");
  assert.equal(keepaliveAction(150, 0, 100, config), "none"); // one PING per interval
  assert.equal(keepaliveAction(200, 0, 100, config), "ping");
  assert.equal(keepaliveAction(300, 0, 200, config), "dead");
  assert.equal(keepaliveAction(300, 250, 200, config), "none"); // something arrived
});
