import assert from "node:assert/strict";
import { agentArgs, controlFetch, freePort, PresyncProcess } from "../../fixtures/cluster.ts";
import { until } from "../../fixtures/until.ts";
import { writeNewKey } from "../key_file.ts";
import { ExitCode } from "./exit_codes.ts";

Deno.test("evacuate against a dead destination says what it waits for and exits 5 after --timeout", async () => {
  const root = await Deno.makeTempDir({ prefix: "presync-evac-" });
  let agent: PresyncProcess | null = null;
  let evacuate: PresyncProcess | null = null;
  try {
    await writeNewKey(`${root}/key`);
    await Deno.writeFile(`${root}/source.img`, new Uint8Array(1024 * 1024).fill(9));
    const image = `${root}/source.img`;
    agent = new PresyncProcess(
      agentArgs(root, image, freePort(), `${root}/agent.sock`, ["--log-format", "json"]),
    );
    const started = agent;
    await until("the agent to answer", async () => {
      assert.ok(!started.exited, `the agent exited:\n${started.output}`);
      return (await controlFetch(`${root}/agent.sock`, "GET", "/status")).ok;
    }, { context: () => started.output, everyMs: 100 });
    evacuate = new PresyncProcess([
      "evacuate",
      "vm",
      "--control",
      `${root}/agent.sock`,
      "--timeout",
      "2",
    ]);
    // No bound on how long it takes, only that it ends by itself: a test deadline kills it.
    const killer = setTimeout(() => evacuate?.kill(), 60_000);
    const status = await evacuate.wait();
    clearTimeout(killer);
    assert.equal(status.code, ExitCode.UNREACHABLE, evacuate.output);
    assert.match(evacuate.output, /vm: waiting for the destination: the agent has no link to it/);
    assert.match(evacuate.output, /the destination has been unreachable for \d+ s \(--timeout 2\)/);
    assert.match(evacuate.output, /\[TIMEOUT\]/);
    const json = new PresyncProcess([
      "evacuate",
      "vm",
      "--control",
      `${root}/agent.sock`,
      "--timeout",
      "1",
      "--json",
    ]);
    assert.equal((await json.wait()).code, ExitCode.UNREACHABLE);
    const line = json.output.split("\n").find((l) => l.startsWith("{"));
    assert.deepStrictEqual(JSON.parse(line!).code, "TIMEOUT");
    assert.ok(!agent.exited, "the agent keeps running and keeps the evacuation requested");
  } finally {
    await evacuate?.kill();
    await agent?.kill("SIGTERM");
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("evacuate names each wait; only a missing agent or link counts towards --timeout", async () => {
  const { describeWait } = await import("./cmd_evacuate.ts");
  assert.deepStrictEqual(describeWait(null, false), {
    message: "waiting for the agent: its control socket does not answer",
    unreachable: true,
  });
  assert.equal(describeWait({ state: "disconnected" }, false).unreachable, true);
  assert.equal(describeWait({ state: "starting" }, true).unreachable, true);
  for (
    const state of ["opening", "idle", "scanning", "sending", "evacuating", "evacuated", "paused"]
  ) {
    assert.equal(describeWait({ state }, false).unreachable, false, state);
  }
  assert.match(describeWait({ state: "opening" }, false).message, /opening the volume/);
  assert.match(describeWait({ state: "idle" }, false).message, /preparing the final cut/);
  assert.match(describeWait({ state: "idle" }, true).message, /waiting for the commit/);
  assert.deepStrictEqual(
    describeWait(
      { state: "idle", evacuation: { step: "hook", detail: "virsh suspend db1" } },
      false,
    ),
    {
      message: "running the evacuate hook (pausing the VM) (virsh suspend db1)",
      unreachable: false,
    },
  );
  assert.equal(
    describeWait({
      state: "disconnected",
      evacuation: { step: "waiting_for_link", detail: "connection refused" },
    }, false).unreachable,
    true,
  );
});

Deno.test("evacuate prints where the time went; status says where its prediction comes from", async () => {
  const { describeBreakdown } = await import("./cmd_evacuate.ts");
  assert.equal(
    describeBreakdown({
      pauseSeconds: 0.2,
      scanSeconds: 0.412,
      sendSeconds: 3,
      commitSeconds: 0.25,
      verifySeconds: 0.15,
      generations: 2,
      blocks: 181,
      wireBytes: 11 * 1024 * 1024,
      sendWaits: { sourceSeconds: 0.5, linkSeconds: 2.125, digestsSeconds: 0, flushSeconds: 0.1 },
    }),
    "  pause (hook) 0.20 s, scan 0.41 s, send 3.00 s, commit 0.25 s, verify 0.15 s; " +
      "2 generations, 181 blocks, 11.0 MiB\n" +
      "  the send waited for the source 0.50 s, the link 2.13 s, page digests 0.00 s, " +
      "acknowledgements 0.10 s",
  );
  const { describeVolume } = await import("./cmd_status.ts");
  const volume = {
    name: "db1",
    state: "idle",
    committedGeneration: 4,
    rpoSeconds: 3,
    pendingBytes: 1024,
    predictedEvacuationSeconds: 2.5,
  };
  assert.match(
    describeVolume({ ...volume, prediction: { linkSource: "probe", freshSource: "tracker" } }),
    /evacuation ≈ .* \(link speed from a probe past --rate; new writes counted by the tracker\)/,
  );
  assert.match(
    describeVolume({ ...volume, predictedEvacuationSeconds: null, prediction: null }),
    /evacuation ≈ unknown \(link speed not measured yet\)$/,
  );
});
