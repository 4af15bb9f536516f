import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { ErrorCode } from "../errors.ts";
import { type LeaseHolder, VolumeLeases } from "./volume_leases.ts";

const quiet = () => {};

/** A holder whose liveness the test decides; `stopped` counts takeovers of it. */
interface TestHolder extends LeaseHolder {
  stopped: number;
  stop(): void;
}

function holder(instance: string | null, session: object, alive: Promise<boolean> | boolean) {
  const h: TestHolder = {
    source: instance === null
      ? null
      : { instance: instance.repeat(16), host: `host-${instance}`, pid: 1 },
    session,
    remote: `10.0.0.${instance ?? "9"}:1`,
    sinceMs: Date.UTC(2026, 11, 1),
    stopped: 0,
    probe: () => Promise.resolve(alive),
    stop: () => {
      h.stopped++;
    },
  };
  return h;
}

Deno.test("leases: a free volume is taken; release frees it", async () => {
  const leases = new VolumeLeases<TestHolder>(quiet);
  const a = holder("a", {}, true);
  const lease = await leases.acquire("vm", a);
  assert.equal(leases.holder("vm"), a);
  lease.release();
  assert.equal(leases.holder("vm"), undefined);
});

Deno.test("leases: the same agent (instance or session) takes over without a probe", async () => {
  const leases = new VolumeLeases<TestHolder>(quiet);
  const session = {};
  const first = holder("a", session, true);
  const lease = await leases.acquire("vm", first);
  // The old stream is stopped; its end releases the lease, which lets the new one in.
  first.stop = () => lease.release();
  const probed = holder("a", {}, true);
  probed.probe = () => Promise.reject(new Error("the same agent is never probed"));
  const probedLease = await leases.acquire("vm", probed);
  assert.equal(leases.holder("vm"), probed);
  // Same session, no instance (an older agent on a new stream): also the same agent, which
  // gets the volume once the old stream ended.
  const legacy = holder(null, probed.session, true);
  let granted = false;
  const pending = leases.acquire("vm", legacy).then(() => granted = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(probed.stopped, 1);
  assert.equal(granted, false, "waits for the old stream to end");
  probedLease.release();
  await pending;
  assert.equal(leases.holder("vm"), legacy);
});

Deno.test("leases: another live agent is refused naming both; a gone one is replaced", async () => {
  const leases = new VolumeLeases<TestHolder>(quiet);
  const a = holder("a", {}, true);
  await leases.acquire("vm", a);
  const err = await assertRejectsCode(
    leases.acquire("vm", holder("b", {}, true)),
    ErrorCode.VOLUME_HELD,
  );
  assert.match(
    err.message,
    /agent aaaaaaaaaaaa on host-a \(pid 1\) from 10\.0\.0\.a:1 has held it since 2026-12-01/,
  );
  assert.match(err.message, /refusing agent bbbbbbbbbbbb on host-b/);
  assert.match(err.message, /presync resume vm/);
  assert.equal(a.stopped, 0);
  assert.equal(leases.holder("vm"), a);
  // Its agent dies: the probe fails, and the next agent takes over.
  const gone = holder("c", {}, false);
  const lease = await leases.acquire("other", gone);
  gone.stop = () => lease.release();
  const d = holder("d", {}, true);
  await leases.acquire("other", d);
  assert.equal(leases.holder("other"), d);
});

Deno.test("leases: acquisitions of one volume are handled one at a time", async () => {
  const leases = new VolumeLeases<TestHolder>(quiet);
  let answer!: (alive: boolean) => void;
  const a = holder("a", {}, new Promise<boolean>((resolve) => answer = resolve));
  const lease = await leases.acquire("vm", a);
  a.stop = () => lease.release();
  const b = leases.acquire("vm", holder("b", {}, true));
  const c = leases.acquire("vm", holder("c", {}, true));
  answer(false);
  await b;
  // c waited for b, which is alive: c is refused instead of both taking turns.
  await assertRejectsCode(c, ErrorCode.VOLUME_HELD);
});
