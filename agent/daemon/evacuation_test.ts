import assert from "node:assert/strict";
import { memoryLog } from "../../fixtures/local_volume.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { Evacuation } from "./evacuation.ts";

Deno.test("evacuation: each step is logged once and shown in status", async () => {
  const { log, lines } = memoryLog();
  const e = new Evacuation("vm", 1000, log);
  e.to("waiting_for_link", "the destination is not reachable: refused");
  e.to("waiting_for_link", "the destination is not reachable: refused");
  assert.equal(e.status().step, "waiting_for_link");
  assert.match(String(e.status().detail), /refused/);
  e.to("hook_done");
  assert.equal(e.hookDone, true);
  e.cutFinal(7, 12);
  assert.equal(e.finalGeneration, 7);
  e.to("sending");
  const report = {
    volume: "vm",
    seconds: 1.5,
    bytesSent: 5,
    generation: 7,
    merkleRoot: "r",
    verified: true,
    breakdown: e.breakdown(5),
  };
  e.finish(report);
  e.to("sending"); // after the end: ignored
  assert.deepEqual(await e.promise, report);
  const steps = lines.map((l) => l.fields.step);
  assert.deepEqual(steps, [
    "requested",
    "waiting_for_link",
    "hook_done",
    "final_cut",
    "sending",
    "done",
  ]);
  assert.equal(lines.find((l) => l.fields.step === "final_cut")!.fields.generation, 7);
  assert.equal(e.status().step, "done");
  assert.equal(e.settled, true);
});

Deno.test("evacuation: a failure rejects once, with its code, and is logged as an error", async () => {
  const { log, lines } = memoryLog();
  const e = new Evacuation("vm", 0, log);
  const parked = new PresyncError(ErrorCode.VOLUME_HELD, "another agent holds vm");
  e.fail(parked);
  e.fail(new PresyncError(ErrorCode.IO, "later"));
  await assert.rejects(e.promise, (err) => err === parked);
  const failed = lines.filter((l) => l.fields.step === "failed");
  assert.equal(failed.length, 1);
  assert.equal(failed[0].level, "error");
  assert.equal(failed[0].fields.code, ErrorCode.VOLUME_HELD);
  assert.equal(e.status().detail, "another agent holds vm");
});

Deno.test("evacuation: the breakdown adds up each part's time and the generations committed", () => {
  const { log } = memoryLog();
  const e = new Evacuation("vm", 0, log);
  e.timed("pause", 0.25);
  e.timed("send", 1.5);
  e.timed("commit", 0.125);
  e.committed(40);
  e.timed("scan", 0.5);
  e.timed("send", 2);
  e.timed("commit", 0.25);
  e.timed("send", -1); // a clock step backwards counts nothing
  e.committed(2);
  e.timed("verify", 0.3);
  e.sendWaited({ sourceMs: 250, linkMs: 1000, digestsMs: 0, flushMs: 12.5 });
  e.sendWaited({ sourceMs: 125, linkMs: 500.4, digestsMs: 8, flushMs: 0 });
  assert.deepEqual(e.breakdown(1234), {
    pauseSeconds: 0.25,
    scanSeconds: 0.5,
    sendSeconds: 3.5,
    commitSeconds: 0.375,
    verifySeconds: 0.3,
    generations: 2,
    blocks: 42,
    wireBytes: 1234,
    sendWaits: {
      sourceSeconds: 0.375,
      linkSeconds: 1.5,
      digestsSeconds: 0.008,
      flushSeconds: 0.013,
    },
  });
});
