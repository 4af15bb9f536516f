import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import assert from "node:assert/strict";
import { createNoneCodec } from "../../plugins/codec-none/mod.ts";
import { createZstdCodec } from "../../plugins/codec-zstd/mod.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { memoryLog } from "../../fixtures/local_volume.ts";
import { memoryTransport } from "../../fixtures/memory_transport.ts";
import { TEST_PSK } from "../../fixtures/session_pair.ts";
import { canMountTmpfs, withTmpfs } from "../../fixtures/tmpfs.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { ErrorCode } from "../errors.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { SyncServer } from "../net/sync_server.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { Session } from "../wire/session.ts";
import { SourceAgent, type SourceAgentConfig } from "./source_agent.ts";
import type { VolumeStatus } from "./volume_status.ts";

const codec = createZstdCodec();
const quiet = () => {};

/** An in-process destination (store in `root/store`) reachable through a memory transport. */
function destination(root: string) {
  const { log, lines } = memoryLog();
  const server = new SyncServer(
    new ReplicaStore(new DirectoryBackend(new DenoFileSystem(), `${root}/store`)),
    [codec, createNoneCodec()],
    log,
  );
  const sessions = new Set<Session>();
  const transport = memoryTransport((channel) => {
    Session.accept(channel, { psk: TEST_PSK, logger: quiet }).then((session) => {
      sessions.add(session);
      return server.serveSession(session);
    }).catch(() => {});
  });
  return {
    transport,
    lines,
    stop() {
      for (const s of sessions) s.abort();
      transport.closeAll();
    },
  };
}

/** A source agent for `volumes` (name → image) whose state is `stateDir`. */
function agent(
  transport: SourceAgentConfig["transport"],
  stateDir: string,
  volumes: Record<string, string>,
  fs?: SourceAgentConfig["fs"],
) {
  const { log, lines } = memoryLog();
  const source = new SourceAgent({
    volumes: Object.entries(volumes).map(([name, image]) => ({ name, image })),
    to: { hostname: "memory", port: 1 },
    transport,
    psk: TEST_PSK,
    stateDir,
    blockSize: 65536,
    rate: Infinity,
    schedule: [],
    intervalMs: 3_600_000,
    readRateBytesPerSecond: 0,
    codec,
    delayTargetMs: 0,
    log,
    fs,
  });
  return { source, lines };
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function statusOf(source: SourceAgent, name: string): VolumeStatus {
  return source.status().find((s) => s.name === name)!;
}

async function inTemp(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-source-agent-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function writeImage(path: string, bytes: number, fill: number): Promise<void> {
  await Deno.writeFile(path, new Uint8Array(bytes).fill(fill));
}

Deno.test("source agent: the first generation goes out right after start, not an interval later", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/a.img`, 256 * 1024, 1);
    const dest = destination(root);
    const { source } = agent(dest.transport, `${root}/state`, { a: `${root}/a.img` });
    await source.init();
    const running = source.run();
    try {
      await waitFor("generation 1", () => statusOf(source, "a").committedGeneration === 1);
      assert.equal(statusOf(source, "a").state, "idle");
    } finally {
      source.stop();
      await running;
      dest.stop();
    }
  });
});

/** A file system whose opens of `path` wait until `release` is called. */
class GatedFileSystem extends DenoFileSystem {
  readonly #gate = Promise.withResolvers<void>();
  constructor(readonly path: string) {
    super();
  }
  release(): void {
    this.#gate.resolve();
  }
  override async open(path: string, options?: Parameters<DenoFileSystem["open"]>[1]) {
    if (path === this.path) await this.#gate.promise;
    return await super.open(path, options);
  }
}

Deno.test("source agent: while a volume opens, status says `opening` and requests wait for it", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/a.img`, 256 * 1024, 3);
    const dest = destination(root);
    const fs = new GatedFileSystem(`${root}/a.img`);
    const { source } = agent(dest.transport, `${root}/state`, { a: `${root}/a.img` }, fs);
    const init = source.init();
    let running: Promise<void> | undefined;
    try {
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(statusOf(source, "a").state, "opening");
      let paused = false;
      const pause = source.pause("a").then(() => paused = true);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(paused, false, "a pause cannot act on a volume not opened yet");
      fs.release();
      await init;
      await pause;
      assert.equal(statusOf(source, "a").paused, true);
      running = source.run();
      await source.resume("a");
      await waitFor("generation 1", () => statusOf(source, "a").committedGeneration === 1);
    } finally {
      fs.release();
      source.stop();
      await running;
      dest.stop();
    }
  });
});

Deno.test("source agent: a stop while a session is connecting ends the agent once it connects", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/a.img`, 256 * 1024, 1);
    const dest = destination(root);
    let release = () => {};
    const held = new Promise<void>((resolve) => release = resolve);
    let connecting = false;
    const slow: SourceAgentConfig["transport"] = {
      name: "slow",
      async connect(to) {
        connecting = true;
        await held;
        return await dest.transport.connect(to);
      },
      listen: (address) => dest.transport.listen(address),
    };
    const { source } = agent(slow, `${root}/state`, { a: `${root}/a.img` });
    await source.init();
    const running = source.run();
    let ended = false;
    running.then(() => ended = true);
    try {
      await waitFor("the connect to start", () => connecting);
      source.stop();
      release();
      // Before the fix the session that came up after stop() was served forever.
      await waitFor("the agent to end", () => ended, 10_000);
    } finally {
      source.stop();
      release();
      await running;
      dest.stop();
    }
  });
});

Deno.test("source agent: a resized volume is parked by name; the other syncs on; resume retries it", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/a.img`, 256 * 1024, 1);
    await writeImage(`${root}/b.img`, 256 * 1024, 2);
    const dest = destination(root);
    const images = { a: `${root}/a.img`, b: `${root}/b.img` };
    {
      const { source } = agent(dest.transport, `${root}/state`, images);
      await source.init();
      const running = source.run();
      await waitFor("both synced", () => source.status().every((s) => s.committedGeneration === 1));
      source.stop();
      await running;
    }
    await Deno.truncate(images.a, 512 * 1024);
    await writeImage(images.b, 256 * 1024, 3);
    const { source, lines } = agent(dest.transport, `${root}/state`, images);
    await source.init();
    const running = source.run();
    try {
      await waitFor("a parked", () => statusOf(source, "a").state === "parked");
      const a = statusOf(source, "a");
      assert.equal(a.lastErrorCode, ErrorCode.VOLUME_MISMATCH);
      assert.match(String(a.lastError), /is now 524288 bytes/);
      const parked = lines.find((l) => l.event === "volume_parked")!;
      assert.equal(parked.fields.volume, "a");
      assert.ok(String(parked.fields.fix).length > 20);
      await assertRejectsCode(source.evacuate("a"), ErrorCode.VOLUME_MISMATCH);
      // The other volume goes on syncing: its new content reaches the replica.
      await waitFor("b's new generation", () => statusOf(source, "b").committedGeneration === 2);
      assert.equal(await hashFile(`${root}/store/b/image`), await hashFile(images.b));
      assert.equal(source.fatal, null);
      // Fixed (the image back to its size), `resume` retries the parked volume.
      await Deno.truncate(images.a, 256 * 1024);
      await source.resume("a");
      await waitFor("a synced again", () => statusOf(source, "a").state === "idle");
      assert.equal(statusOf(source, "a").lastErrorCode, null);
    } finally {
      source.stop();
      await running;
      dest.stop();
    }
  });
});

Deno.test("source agent: a second agent on a copied state directory is refused, naming both", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/vm.img`, 256 * 1024, 4);
    const dest = destination(root);
    const images = { vm: `${root}/vm.img` };
    const first = agent(dest.transport, `${root}/state`, images);
    await first.source.init();
    const firstRun = first.source.run();
    await waitFor("first synced", () => statusOf(first.source, "vm").committedGeneration === 1);
    await Deno.mkdir(`${root}/copy`);
    await new Deno.Command("cp", { args: ["-a", `${root}/state/vm`, `${root}/copy/vm`] }).output();
    const second = agent(dest.transport, `${root}/copy`, images);
    await second.source.init();
    const secondRun = second.source.run();
    try {
      await waitFor("the refusal", () => statusOf(second.source, "vm").state === "parked");
      const refused = statusOf(second.source, "vm");
      assert.equal(refused.lastErrorCode, ErrorCode.VOLUME_HELD);
      assert.match(String(refused.lastError), /another live source agent: agent [0-9a-f]{12} on/);
      assert.match(String(refused.lastError), /refusing agent [0-9a-f]{12} on/);
      // The holder is untouched and goes on; neither agent stops.
      await writeImage(images.vm, 256 * 1024, 5);
      await first.source.evacuate("vm");
      assert.equal(statusOf(first.source, "vm").state, "evacuated");
      assert.equal(first.source.fatal, null);
      assert.equal(second.source.fatal, null);
      assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(images.vm));
    } finally {
      first.source.stop();
      second.source.stop();
      await Promise.all([firstRun, secondRun]);
      dest.stop();
    }
  });
});

Deno.test("source agent: a state directory older than the replica is explained, and evacuate fails at once", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/vm.img`, 256 * 1024, 6);
    const dest = destination(root);
    const images = { vm: `${root}/vm.img` };
    // A backup of the state after generation 1.
    {
      const { source } = agent(dest.transport, `${root}/state`, images);
      await source.init();
      const running = source.run();
      await waitFor("generation 1", () => statusOf(source, "vm").committedGeneration === 1);
      await new Deno.Command("cp", { args: ["-a", `${root}/state`, `${root}/backup`] }).output();
      await writeImage(images.vm, 256 * 1024, 7);
      await source.evacuate("vm");
      source.stop();
      await running;
    }
    const { source, lines } = agent(dest.transport, `${root}/backup`, images);
    await source.init();
    const running = source.run();
    try {
      await waitFor("the fault", () => statusOf(source, "vm").state === "parked");
      assert.equal(statusOf(source, "vm").lastErrorCode, ErrorCode.SOURCE_STATE_STALE);
      const err = await assertRejectsCode(source.evacuate("vm"), ErrorCode.SOURCE_STATE_STALE);
      assert.match(err.message, /at generation 2 but this agent's state .* records generation 1/);
      assert.ok(
        lines.some((l) => l.event === "volume_parked" && l.fields.code === "SOURCE_STATE_STALE"),
      );
    } finally {
      source.stop();
      await running;
      dest.stop();
    }
  });
});

Deno.test("source agent: an evacuation while the destination is unreachable says so, then completes", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/vm.img`, 256 * 1024, 8);
    const dest = destination(root);
    dest.transport.refuse();
    const { source, lines } = agent(dest.transport, `${root}/state`, { vm: `${root}/vm.img` });
    await source.init();
    const running = source.run();
    try {
      await waitFor("a failed connect", () => lines.some((l) => l.event === "link_down"));
      const evacuation = source.evacuate("vm");
      const waiting = statusOf(source, "vm").evacuation!;
      assert.equal(waiting.step, "waiting_for_link");
      assert.match(String(waiting.detail), /not reachable: memory peer unreachable/);
      assert.equal(statusOf(source, "vm").lastErrorCode, ErrorCode.CONNECTION_LOST);
      dest.transport.allow();
      const report = await evacuation;
      assert.equal(report.verified, true);
      await assert.rejects(source.resume("vm"), /was evacuated/);
    } finally {
      source.stop();
      await running;
      dest.stop();
    }
  });
});

Deno.test("source agent: a volume that cannot start is parked; the others run; resume starts it", async () => {
  await inTemp(async (root) => {
    await writeImage(`${root}/b.img`, 256 * 1024, 9);
    const dest = destination(root);
    const images = { a: `${root}/missing.img`, b: `${root}/b.img` };
    const { source, lines } = agent(dest.transport, `${root}/state`, images);
    await source.init();
    const running = source.run();
    try {
      const a = statusOf(source, "a");
      assert.equal(a.state, "parked");
      assert.equal(a.lastErrorCode, ErrorCode.IO);
      assert.match(String(a.lastError), /could not start: open source image .*missing\.img/);
      assert.ok(lines.some((l) => l.event === "volume_parked" && l.fields.volume === "a"));
      await waitFor("b synced", () => statusOf(source, "b").committedGeneration === 1);
      await assertRejectsCode(source.evacuate("a"), ErrorCode.IO);
      await assertRejectsCode(source.resume("a"), ErrorCode.IO);
      await writeImage(images.a, 128 * 1024, 1);
      await source.resume("a");
      await waitFor("a synced", () => statusOf(source, "a").committedGeneration === 1);
      assert.deepEqual(source.status().map((s) => s.name), ["a", "b"]);
    } finally {
      source.stop();
      await running;
      dest.stop();
    }
  });
});

Deno.test({
  name: "source agent: a full destination disk holds back only the volume that does not fit",
  ignore: !canMountTmpfs,
  fn: () =>
    inTemp((root) =>
      withTmpfs("2m", async (mount) => {
        const dest = destination(mount);
        try {
          const images = { big: `${root}/big.img`, small: `${root}/small.img` };
          const noise = (bytes: number) => {
            const out = new Uint8Array(bytes);
            for (let at = 0; at < bytes; at += 65536) {
              crypto.getRandomValues(out.subarray(at, at + 65536));
            }
            return out;
          };
          await Deno.writeFile(images.big, noise(4 * 1024 * 1024));
          await Deno.writeFile(images.small, noise(256 * 1024));
          const { source, lines } = agent(dest.transport, `${root}/state`, images);
          await source.init();
          const running = source.run();
          try {
            await waitFor(
              "small synced",
              () => statusOf(source, "small").committedGeneration === 1,
            );
            // Between its retries the volume tries again (sending): catch it waiting.
            let big = statusOf(source, "big");
            await waitFor("big held back", () => {
              big = statusOf(source, "big");
              return big.state === "retrying" && big.lastErrorCode === "NO_SPACE";
            });
            assert.match(String(big.lastError), /disk is full/);
            assert.ok(
              lines.some((l) => l.event === "volume_retry" && l.fields.code === "NO_SPACE"),
            );
            assert.equal(statusOf(source, "small").lastErrorCode, null);
            assert.equal(source.fatal, null);
          } finally {
            source.stop();
            await running;
          }
        } finally {
          dest.stop();
        }
      })
    ),
});
