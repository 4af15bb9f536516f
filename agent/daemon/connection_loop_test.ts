import assert from "node:assert/strict";
import { memoryLog } from "../../fixtures/local_volume.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Session } from "../wire/session.ts";
import { runConnectionLoop } from "./connection_loop.ts";

const session = {} as Session;
const refused = () =>
  Promise.reject(new PresyncError(ErrorCode.CONNECTION_LOST, "refused", { retryable: true }));

Deno.test("connection loop: backs off while connects fail, and starts over after a session", async () => {
  const { log, lines } = memoryLog();
  const attempts = ["fail", "fail", "ok", "fail", "stop"];
  const slept: number[] = [];
  let served = 0;
  const fatal = await runConnectionLoop({
    connect: () => attempts.shift() === "ok" ? Promise.resolve(session) : refused(),
    serve: () => {
      served++;
      return Promise.reject(new PresyncError(ErrorCode.LINK_DEAD, "silent", { retryable: true }));
    },
    stopped: () => attempts.length === 0,
    sleep: (ms) => Promise.resolve(void slept.push(ms)),
    log,
    random: () => 0.5,
  });
  assert.equal(fatal, null);
  assert.equal(served, 1);
  // 250, 500; then the session came up: 250 after it, 500 after the next failure.
  assert.deepEqual(slept, [250, 500, 250, 500]);
  const downs = lines.filter((l) => l.event === "link_down").map((l) => l.fields.code);
  assert.deepEqual(downs, ["CONNECTION_LOST", "CONNECTION_LOST", "LINK_DEAD", "CONNECTION_LOST"]);
});

Deno.test("connection loop: a wrong key or an untrusted server stops it with that error", async () => {
  for (
    const code of [ErrorCode.AUTH_FAILED, ErrorCode.PEER_UNTRUSTED, ErrorCode.PROTOCOL_VERSION]
  ) {
    const { log, lines } = memoryLog();
    const fatal = await runConnectionLoop({
      connect: () => Promise.reject(new PresyncError(code, "no")),
      serve: () => Promise.resolve(),
      stopped: () => false,
      sleep: () => Promise.reject(new Error("must not retry")),
      log,
    });
    assert.equal(fatal?.code, code);
    assert.equal(lines.at(-1)?.event, "agent_stopped");
  }
});

Deno.test("connection loop: volume faults never stop it (they are the supervisors')", async () => {
  const { log } = memoryLog();
  let rounds = 0;
  const fatal = await runConnectionLoop({
    connect: () => Promise.resolve(session),
    serve: () =>
      Promise.reject(new PresyncError(ErrorCode.VOLUME_MISMATCH, "should not reach here")),
    stopped: () => ++rounds > 3,
    sleep: () => Promise.resolve(),
    log,
  });
  assert.equal(fatal, null);
});
