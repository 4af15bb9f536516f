import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { FailRenameFileSystem } from "../../fixtures/fail_rename_fs.ts";
import { localVolume, memoryLog } from "../../fixtures/local_volume.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { detachCut } from "../migrate/mod.ts";
import { NbdClient } from "../nbd/mod.ts";

const KiB = 1024;

async function inTemp(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-pipeline-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

function data(bytes: number, fill = 0): Uint8Array {
  const out = new Uint8Array(bytes);
  crypto.getRandomValues(out.subarray(0, Math.min(bytes, 65536)));
  if (fill) out.fill(fill, bytes / 2);
  return out;
}

/** A sleep that records what was asked and ends the run at its first call. */
function oneSleep() {
  const asked: number[] = [];
  return {
    asked,
    alive: () => asked.length === 0,
    sleep: (ms: number) => {
      asked.push(ms);
      return Promise.resolve();
    },
  };
}

Deno.test("pipeline: the first cut comes right after start, the next one an interval later", async () => {
  await inTemp(async (root) => {
    const { log, lines } = memoryLog();
    await using v = await localVolume(root, "vm", data(512 * KiB, 3), {
      log,
      intervalMs: 3_600_000,
    });
    const s = oneSleep();
    v.pipeline.attach(await v.link());
    await v.pipeline.run(s.alive, s.sleep);
    assert.equal(v.pipeline.commits, 1, "generation 1 was sent before any wait");
    assert.ok(s.asked[0] > 3_599_000, `then it waits an interval: ${s.asked[0]} ms`);
    assert.ok(lines.some((l) => l.event === "generation_committed" && l.fields.generation === 1));
    const status = v.pipeline.snapshot();
    assert.equal(status.committedGeneration, 1);
    assert.equal(status.phase, "idle");
    assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
  });
});

Deno.test("pipeline: a source state older than the replica is refused before anything is sent", async () => {
  await inTemp(async (root) => {
    const { log } = memoryLog();
    {
      await using v = await localVolume(root, "vm", data(256 * KiB), { log });
      const s = oneSleep();
      v.pipeline.attach(await v.link());
      await v.pipeline.run(s.alive, s.sleep);
    }
    // The state as it was before generation 1: restored from an old backup.
    const stateJson = `${root}/state/vm/state.json`;
    const state = JSON.parse(await Deno.readTextFile(stateJson));
    await Deno.writeTextFile(stateJson, JSON.stringify({ ...state, committedGeneration: 0 }));
    await using again = await localVolume(root, "vm", data(256 * KiB), { log });
    const err = await assertRejectsCode(
      (async () => again.pipeline.attach(await again.link()))(),
      ErrorCode.SOURCE_STATE_STALE,
    );
    assert.match(err.message, /at generation 1 but this agent's state .* records generation 0/);
    assert.match(err.message, /remove .*state\/vm and the destination's replica/);
    again.pipeline.park(err);
    const refused = await assertRejectsCode(
      again.pipeline.evacuate(),
      ErrorCode.SOURCE_STATE_STALE,
    );
    assert.match(refused.message, /is parked and cannot be evacuated/);
  });
});

Deno.test("pipeline: an evacuation goes through every step and reports a verified replica", async () => {
  await inTemp(async (root) => {
    const { log, lines } = memoryLog();
    const hooked: string[] = [];
    await using v = await localVolume(root, "vm", data(512 * KiB), {
      log,
      evacuateHook: "pause-the-vm",
      runHook: (command, volume) => Promise.resolve(void hooked.push(`${command} ${volume}`)),
    });
    const first = oneSleep();
    v.pipeline.attach(await v.link());
    await v.pipeline.run(first.alive, first.sleep);
    const file = await Deno.open(v.image, { write: true });
    await file.write(new Uint8Array(100_000).fill(7));
    file.close();
    const evacuation = v.pipeline.evacuate();
    assert.equal(v.pipeline.evacuating, true);
    const s = oneSleep();
    await v.pipeline.run(s.alive, s.sleep);
    const report = await evacuation;
    assert.deepEqual(hooked, ["pause-the-vm vm"]);
    assert.equal(report.verified, true);
    assert.equal(report.generation, 2);
    assert.equal(report.breakdown.generations, 1);
    assert.equal(report.breakdown.wireBytes, report.bytesSent);
    assert.ok(report.breakdown.blocks >= 2, "100 000 bytes written: two blocks at least");
    const steps = lines.filter((l) => l.event === "evacuation_step").map((l) => l.fields.step);
    assert.deepEqual(steps, [
      "requested",
      "hook",
      "hook_done",
      "final_cut",
      "sending",
      "commit",
      "verify",
      "done",
    ]);
    assert.equal(v.pipeline.snapshot().phase, "evacuated");
    assert.equal(v.pipeline.snapshot().evacuation?.step, "done");
    assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
    // Asking again gives the same report; resuming is refused and says why.
    assert.deepEqual(await v.pipeline.evacuate(), report);
    assert.throws(
      () => v.pipeline.resume(),
      (err: unknown) =>
        err instanceof PresyncError && err.code === ErrorCode.VOLUME_EVACUATED &&
        /was evacuated \(generation 2 verified/.test(err.message),
    );
  });
});

Deno.test("pipeline: a failing hook fails the evacuation, takes no final cut, and sync goes on", async () => {
  await inTemp(async (root) => {
    const { log, lines } = memoryLog();
    await using v = await localVolume(root, "vm", data(256 * KiB), {
      log,
      evacuateHook: "false",
      runHook: () =>
        Promise.reject(new PresyncError(ErrorCode.INVALID_ARGUMENT, "hook `false` failed")),
    });
    v.pipeline.attach(await v.link());
    const evacuation = v.pipeline.evacuate();
    const s = oneSleep();
    await v.pipeline.run(s.alive, s.sleep);
    await assertRejectsCode(evacuation, ErrorCode.INVALID_ARGUMENT);
    assert.equal(v.pipeline.evacuating, false);
    assert.equal(v.pipeline.snapshot().evacuation?.step, "failed");
    assert.ok(!lines.some((l) => l.fields.step === "final_cut"));
    // The background sync went on: its first cut came as usual.
    assert.equal(v.pipeline.commits, 1);
  });
});

Deno.test("pipeline: an evacuation asked for while disconnected says it waits for the link", async () => {
  await inTemp(async (root) => {
    const { log } = memoryLog();
    await using v = await localVolume(root, "vm", data(256 * KiB), { log });
    v.pipeline.retrying(
      new PresyncError(ErrorCode.CONNECTION_LOST, "connection refused", { retryable: true }),
      5000,
    );
    v.pipeline.evacuate().catch(() => {});
    const evacuation = v.pipeline.snapshot().evacuation!;
    assert.equal(evacuation.step, "waiting_for_link");
    assert.match(String(evacuation.detail), /not reachable: connection refused/);
  });
});

Deno.test("pipeline: an evacuation asked for mid-send pauses the VM at once; to a destination that does not fold, the generation in flight goes on first", async () => {
  await inTemp(async (root) => {
    const { log, lines } = memoryLog();
    const hooked: string[] = [];
    await using v = await localVolume(root, "vm", data(512 * KiB), {
      log,
      evacuateHook: "pause-the-vm",
      runHook: (command) => Promise.resolve(void hooked.push(command)),
    });
    const link = await v.link();
    let release!: () => void;
    const held = new Promise<void>((resolve) => release = resolve);
    let staging!: () => void;
    const stagingStarted = new Promise<void>((resolve) => staging = resolve);
    const replica = link.destination;
    v.pipeline.attach({
      ...link,
      destination: {
        resumeInfo: () => replica.resumeInfo(),
        beginGeneration: (g, d, c) => replica.beginGeneration(g, d, c),
        stage: async (blocks) => {
          staging();
          await held;
          return replica.stage(blocks);
        },
        flush: () => replica.flush(),
        commit: (g, r) => replica.commit(g, r),
      },
    });
    const s = oneSleep();
    const running = v.pipeline.run(s.alive, s.sleep);
    await stagingStarted;
    const evacuation = v.pipeline.evacuate();
    assert.deepEqual(hooked, ["pause-the-vm"], "the hook runs while generation 1 is held");
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(v.pipeline.snapshot().evacuation?.step, "sending");
    assert.match(
      String(v.pipeline.snapshot().evacuation?.detail),
      /generation 1, before the final cut/,
    );
    release();
    await running;
    const report = await evacuation;
    assert.equal(report.generation, 2);
    assert.deepEqual(hooked, ["pause-the-vm"], "the hook ran once");
    const steps = lines.filter((l) => l.event === "evacuation_step").map((l) => l.fields.step);
    assert.deepEqual(steps.slice(0, 6), [
      "requested",
      "sending",
      "hook",
      "hook_done",
      "sending",
      "final_cut",
    ]);
    assert.equal(report.breakdown.generations, 2, "generation 1 and the final one committed");
    assert.equal(report.breakdown.wireBytes, report.bytesSent);
    assert.ok(report.breakdown.blocks >= 1, "generation 1's data block counts");
  });
});

seededTest(
  "pipeline: an evacuation asked for mid-send folds the generation in flight: one commit, staged blocks kept, a re-written one in its newer version",
  async (prng) => {
    await inTemp(async (root) => {
      const { log, lines } = memoryLog();
      // 40 MiB of data: the send stages it in several pieces (a flush every 16 MiB).
      const image = prng.fill(new Uint8Array(40 * 1024 * KiB));
      await using v = await localVolume(root, "vm", image, {
        log,
        evacuateHook: "pause-the-vm",
        runHook: () => Promise.resolve(),
      });
      const link = await v.link();
      let release!: () => void;
      const held = new Promise<void>((resolve) => release = resolve);
      let secondStage!: () => void;
      const secondStarted = new Promise<void>((resolve) => secondStage = resolve);
      let stages = 0;
      let stagedBlocks = 0;
      const begins: { generation: number; fold: number | null }[] = [];
      const replica = link.destination;
      v.pipeline.attach({
        ...link,
        destination: {
          folds: true,
          resumeInfo: () => replica.resumeInfo(),
          beginGeneration: (g, d, c, o) => {
            begins.push({ generation: g, fold: o?.fold?.popcount() ?? null });
            return replica.beginGeneration(g, d, c, o);
          },
          stage: async (blocks) => {
            if (++stages === 2) {
              secondStage();
              await held;
            }
            stagedBlocks += blocks.length;
            return replica.stage(blocks);
          },
          flush: () => replica.flush(),
          commit: (g, r) => replica.commit(g, r),
        },
      });
      const s = oneSleep();
      const running = v.pipeline.run(s.alive, s.sleep);
      await secondStarted;
      // The VM re-writes block 1 (staged by the first piece) and block 600 (not sent yet).
      const file = await Deno.open(v.image, { write: true });
      const newer = prng.fill(new Uint8Array(64 * KiB));
      await file.write(newer).then(() => file.seek(64 * KiB, Deno.SeekMode.Start));
      await file.write(newer);
      await file.seek(600 * 64 * KiB, Deno.SeekMode.Start);
      await file.write(prng.fill(new Uint8Array(64 * KiB)));
      file.close();
      const evacuation = v.pipeline.evacuate();
      await new Promise((resolve) => setTimeout(resolve, 0));
      release();
      await running;
      const report = await evacuation;
      assert.equal(report.generation, 1, "the generation in flight became the final one");
      assert.equal(report.breakdown.generations, 1, "one commit");
      assert.ok(report.verified);
      assert.deepEqual(begins.map((b) => b.generation), [1, 1]);
      assert.equal(begins[0].fold, null);
      assert.ok(
        begins[1].fold! >= 2,
        `the final cut folded blocks 0, 1 and 600: ${begins[1].fold}`,
      );
      const blocks = image.length / (64 * KiB);
      assert.ok(
        stagedBlocks < blocks + 8,
        `what was staged before the fold still counts: ${stagedBlocks} blocks staged for ${blocks}`,
      );
      assert.ok(
        stagedBlocks >= blocks + 2,
        `blocks 0 and 1, staged before they were re-written, were staged again: ${stagedBlocks}`,
      );
      assert.ok(lines.some((l) => l.event === "generation_folded" && l.fields.generation === 1));
      assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
    });
  },
);

seededTest(
  "pipeline: a fold with the nbd tracker sends the pages both cuts marked, asks no page digests and no resume state",
  async (prng) => {
    await inTemp(async (root) => {
      const { log } = memoryLog();
      const nbd = { transport: "unix" as const, path: `${root}/vm.nbd` };
      await using v = await localVolume(root, "vm", prng.fill(new Uint8Array(40 * 1024 * KiB)), {
        log,
        intervalMs: 1,
        evacuateHook: "pause-the-vm",
        runHook: () => Promise.resolve(),
      }, { tracker: "nbd", trackerSettings: { nbdListen: nbd } });
      const link = await v.link();
      const replica = link.destination;
      let holding: Promise<void> | null = null;
      let release!: () => void;
      let heldAt!: () => void;
      const held = new Promise<void>((resolve) => heldAt = resolve);
      let stages = 0;
      let resumeQueries = 0;
      let digestQueries = 0;
      const begins: number[] = [];
      const pages = new Map<number, number | undefined>();
      v.pipeline.attach({
        ...link,
        destination: {
          folds: true,
          resumeInfo: () => {
            resumeQueries++;
            return replica.resumeInfo();
          },
          beginGeneration: (g, d, c, o) => {
            begins.push(g);
            return replica.beginGeneration(g, d, c, o);
          },
          stage: async (blocks) => {
            if (begins.at(-1) === 2 && ++stages === 2) {
              holding = new Promise((resolve) => release = resolve);
              heldAt();
              await holding;
            }
            if (begins.length === 3) { for (const b of blocks) pages.set(b.block, b.pages); }
            return replica.stage(blocks);
          },
          pageDigests: () => {
            digestQueries++;
            return Promise.resolve(null);
          },
          flush: () => replica.flush(),
          commit: (g, r) => replica.commit(g, r),
        },
      });
      await v.pipeline.run(...oneTurn());
      assert.equal(v.pipeline.commits, 1);
      const client = await NbdClient.connect(nbd, "vm");
      const writePage = (block: number, page: number) =>
        client.write(block * 64 * KiB + page * 4 * KiB, prng.fill(new Uint8Array(4 * KiB)));
      try {
        // Generation 2: page 1 of blocks 0–199.
        for (let block = 0; block < 200; block++) await writePage(block, 1);
        await client.flush();
        assert.deepEqual(v.pipeline.snapshot().pages, { unacked: 0, fresh: 200 }, "status's pages");
        await delay(5);
        [resumeQueries, digestQueries] = [0, 0];
        const s = oneSleep();
        const running = v.pipeline.run(s.alive, s.sleep);
        await held;
        // While it is held after its first group: block 1 (staged) and 150 (not yet) re-written,
        // block 500 written for the first time.
        await writePage(1, 3);
        await writePage(150, 5);
        await writePage(500, 0);
        await client.flush();
        // Generation 2 in flight, its first group (blocks 0–7) staged but not acknowledged yet.
        assert.deepEqual(v.pipeline.snapshot().pages, { unacked: 200, fresh: 3 });
        const evacuation = v.pipeline.evacuate();
        await delay(0);
        release();
        await running;
        const report = await evacuation;
        assert.ok(report.verified);
        assert.deepEqual(begins, [1, 2, 2], "generation 2 begun again as the folded final one");
        assert.equal(resumeQueries, 1, "the folded send asked no resume state");
        assert.equal(digestQueries, 0, "no page digests: both cuts' masks are known");
        assert.equal(pages.get(1), 1 << 3, "a staged block re-written: the final cut's page");
        assert.equal(pages.get(150), (1 << 1) | (1 << 5), "an unstaged one: both cuts' pages");
        assert.equal(pages.get(500), 1 << 0, "a block of the final cut alone: its page");
        assert.equal(
          pages.get(199),
          1 << 1,
          "an unstaged one not re-written: the first cut's page",
        );
        assert.ok(!pages.has(0), "a staged block not re-written is not sent again");
      } finally {
        await client.close();
      }
      assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
    });
  },
);

/** One turn of a pipeline's loop: `alive()` is true once. */
function oneTurn(): [() => boolean, (ms: number) => Promise<void>] {
  let turns = 0;
  return [() => turns++ === 0, () => Promise.resolve()];
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("pipeline: a cut whose recording failed is sent by the next run, not lost (nbd tracker)", async () => {
  await inTemp(async (root) => {
    const { log } = memoryLog();
    const fs = new FailRenameFileSystem("/pending.json");
    const nbd = { transport: "unix" as const, path: `${root}/vm.nbd` };
    // Every run below is one turn of the loop, and a cut is due at each.
    await using v = await localVolume(root, "vm", new Uint8Array(512 * KiB), {
      log,
      intervalMs: 1,
    }, {
      tracker: "nbd",
      trackerSettings: { nbdListen: nbd },
      fs,
    });
    v.pipeline.attach(await v.link());
    await v.pipeline.run(...oneTurn());
    assert.equal(v.pipeline.commits, 1);
    // The VM writes two blocks; the cut that finds them cannot be recorded (disk full).
    const client = await NbdClient.connect(nbd, "vm");
    try {
      await client.write(64 * KiB, new Uint8Array(64 * KiB).fill(0xa5));
      await client.write(320 * KiB + 100, new Uint8Array(1000).fill(0x5a));
      await client.flush();
    } finally {
      await client.close();
    }
    fs.failures = 1;
    await delay(5);
    await assertRejectsCode(v.pipeline.run(...oneTurn()), ErrorCode.NO_SPACE);
    assert.equal(fs.failed, 1, "the recording failed once");
    assert.equal(v.pipeline.state.pending, null);
    // The retry records and sends that same cut: both writes reach the replica.
    await delay(5);
    await v.pipeline.run(...oneTurn());
    assert.equal(v.pipeline.commits, 2);
    assert.equal(v.pipeline.snapshot().committedGeneration, 2);
    assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
  });
});

Deno.test("pipeline: held cuts (a migration's memory phase) take no generation; the migration's final cut, detached to a local copy, then holds every write", async () => {
  await inTemp(async (root) => {
    const { log, lines } = memoryLog();
    await using v = await localVolume(root, "vm", data(512 * KiB), { log });
    v.pipeline.holdCuts = true;
    const held = oneSleep();
    v.pipeline.attach(await v.link());
    await v.pipeline.run(held.alive, held.sleep);
    assert.equal(v.pipeline.commits, 0, "no generation while cuts are held");
    assert.ok(held.asked[0] >= 50);
    const copy = `${root}/final.copy`;
    let detachedBlocks = -1;
    const evacuation = v.pipeline.evacuate({
      skipHook: true,
      onStart: (e) =>
        e.detachFinalCut = async (cut) => {
          const detached = await detachCut(cut, copy, v.pipeline.tracker.blockSize, 512 * KiB);
          detachedBlocks = detached.dirty.popcount();
          return detached;
        },
    });
    const s = oneSleep();
    await v.pipeline.run(s.alive, s.sleep);
    const report = await evacuation;
    assert.equal(report.verified, true);
    assert.equal(report.generation, 1);
    assert.ok(detachedBlocks > 0, "the final cut went through the copy");
    await assert.rejects(Deno.stat(copy), Deno.errors.NotFound, "the copy is removed once sent");
    assert.ok(lines.some((l) => l.fields.step === "final_cut"));
    assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
  });
});

Deno.test("pipeline: a final cut whose copy fails fails the evacuation; its recorded generation is sent by the next run", async () => {
  await inTemp(async (root) => {
    const { log } = memoryLog();
    await using v = await localVolume(root, "vm", data(256 * KiB), { log });
    v.pipeline.attach(await v.link());
    const evacuation = v.pipeline.evacuate({
      skipHook: true,
      onStart: (e) =>
        e.detachFinalCut = () =>
          Promise.reject(new PresyncError(ErrorCode.IO, "no space left for the copy")),
    });
    const s = oneSleep();
    await assertRejectsCode(v.pipeline.run(s.alive, s.sleep), ErrorCode.IO);
    await assertRejectsCode(evacuation, ErrorCode.IO);
    assert.equal(v.pipeline.evacuating, false);
    assert.equal(v.pipeline.snapshot().evacuation?.step, "failed");
    assert.ok(v.pipeline.state.pending, "the cut was recorded before the copy");
    const again = oneSleep();
    await v.pipeline.run(again.alive, again.sleep);
    assert.equal(v.pipeline.commits, 1);
    assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(v.image));
  });
});

Deno.test("pipeline: a migration's evacuation sends no block before its sendAfter settles, unless the link ends first", async () => {
  await inTemp(async (root) => {
    const { log } = memoryLog();
    await using v = await localVolume(root, "vm", data(256 * KiB), { log });
    const memory = Promise.withResolvers<void>();
    const evacuation = v.pipeline.evacuate({
      skipHook: true,
      onStart: (e) => e.sendAfter = memory.promise,
    });
    evacuation.catch(() => {});
    const never = new Promise<never>(() => {});
    let paced = false;
    const pacing = v.pipeline.pace(4096, never).then(() => paced = true);
    // One turn of the event loop: the gate and the rate limit let it through, sendAfter not.
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(paced, false, "a block went out before the memory's last bytes");
    memory.resolve();
    await pacing;
    assert.equal(paced, true);
    // Its memory never ending (joined, the running evacuation gets a new sendAfter): the
    // link ending releases the sender.
    v.pipeline.evacuate({ skipHook: true, onStart: (e) => e.sendAfter = new Promise(() => {}) })
      .catch(() => {});
    const ended = Promise.withResolvers<void>();
    const released = v.pipeline.pace(4096, ended.promise);
    ended.reject(new Error("link lost"));
    await released;
  });
});
