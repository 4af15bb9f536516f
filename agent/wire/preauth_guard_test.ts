import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { memoryChannelPair } from "./memory_channel.ts";
import { PreauthGuard } from "./preauth_guard.ts";
import { Session } from "./session.ts";
import type { SessionLogEntry } from "./session_logger.ts";

const PSK = new Uint8Array(32).fill(4);

Deno.test("pre-auth guard: refused channels are closed, and their log lines rate-limited", async () => {
  const logs: SessionLogEntry[] = [];
  const guard = new PreauthGuard({
    logger: (e) => logs.push(e),
    limits: { maxPending: 2, earlyDropStart: 2, maxPendingPerSource: 2 },
    linesPerWindow: 3,
    windowMs: 60_000,
  });
  const held = [memoryChannelPair(), memoryChannelPair()];
  assert.ok(held.every(([, server]) => guard.admit(server) !== null));
  for (let i = 0; i < 50; i++) {
    const [client, server] = memoryChannelPair();
    assert.equal(guard.admit(server), null);
    const { done } = await client.readable.getReader().read();
    assert.ok(done, "the refused connection is closed");
  }
  assert.equal(logs.filter((e) => e.event === "preauth_refused").length, 3);
  guard.close();
  const summary = logs.find((e) => e.event === "log_suppressed");
  assert.match(summary!.message, /^47 more preauth_refused lines/);
  for (const [a, b] of held) {
    a.close();
    b.close();
  }
});

Deno.test("pre-auth guard: a silent peer loses its slot at the deadline; a real client then gets in", async () => {
  const guard = new PreauthGuard({
    logger: () => {},
    limits: { maxPending: 1, earlyDropStart: 1, maxPendingPerSource: 1, handshakeDeadlineMs: 50 },
  });
  const quiet = { psk: PSK, logger: guard.logger };
  const [silent, silentServer] = memoryChannelPair();
  const slot = guard.admit(silentServer)!;
  const [waiting, waitingServer] = memoryChannelPair();
  assert.equal(guard.admit(waitingServer), null, "the one slot is taken");
  waiting.close();
  await assertRejectsCode(slot.run(() => Session.accept(silentServer, quiet)), "CONNECTION_LOST");
  assert.equal(guard.gate.pending, 0, "the slot came back");
  silent.close();
  const [client, server] = memoryChannelPair();
  const [session, accepted] = await Promise.all([
    Session.connect(client, quiet),
    guard.admit(server)!.run(() => Session.accept(server, quiet)),
  ]);
  await session.close();
  await accepted.closed;
  guard.close();
});
