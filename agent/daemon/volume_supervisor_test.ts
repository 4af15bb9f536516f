import assert from "node:assert/strict";
import { localVolume, memoryLog } from "../../fixtures/local_volume.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import { superviseVolume } from "./volume_supervisor.ts";

async function inTemp(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-supervisor-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const image = (fill: number) => new Uint8Array(256 * 1024).fill(fill);
/** A sleep that lets other work run but takes no time. */
const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

Deno.test("supervisor: a resized image parks its volume with the fix; the other volume syncs on", async () => {
  await inTemp(async (root) => {
    const { log, lines } = memoryLog();
    await using grown = await localVolume(root, "grown", image(1), { log });
    await using steady = await localVolume(root, "steady", image(2), { log });
    // The first volume's image grows after its state was set up.
    await Deno.truncate(grown.image, 512 * 1024);
    const alive = () => !(grown.pipeline.parked && steady.pipeline.commits >= 1);
    await Promise.all([
      superviseVolume(grown.pipeline, { openLink: grown.link, alive, sleep: tick, log }),
      superviseVolume(steady.pipeline, { openLink: steady.link, alive, sleep: tick, log }),
    ]);
    const parked = grown.pipeline.snapshot();
    assert.equal(parked.phase, "parked");
    assert.equal(parked.lastErrorCode, ErrorCode.VOLUME_MISMATCH);
    assert.match(String(parked.lastError), /is now 524288 bytes/);
    const line = lines.find((l) => l.event === "volume_parked")!;
    assert.equal(line.fields.volume, "grown");
    assert.match(String(line.fields.fix), /remove the volume's state directory/);
    assert.equal(steady.pipeline.snapshot().committedGeneration, 1);
    assert.equal(steady.pipeline.snapshot().lastErrorCode, null);
  });
});

Deno.test("supervisor: a retryable refusal retries the volume with backoff, then it syncs", async () => {
  await inTemp(async (root) => {
    const { log, lines } = memoryLog();
    await using v = await localVolume(root, "vm", image(3), { log });
    let refusals = 2;
    const slept: number[] = [];
    await superviseVolume(v.pipeline, {
      openLink: () => {
        if (refusals-- > 0) {
          return Promise.reject(
            new PresyncError(ErrorCode.NO_SPACE, "the disk is full", { retryable: true }),
          );
        }
        return v.link();
      },
      alive: () => v.pipeline.commits < 1,
      sleep: (ms) => {
        slept.push(ms);
        if (refusals >= 0) {
          assert.equal(v.pipeline.snapshot().phase, "retrying");
          assert.equal(v.pipeline.snapshot().lastErrorCode, ErrorCode.NO_SPACE);
        }
        return tick();
      },
      log,
      random: () => 0.5,
    });
    assert.deepEqual(slept, [250, 500], "two retries, backing off");
    assert.equal(lines.filter((l) => l.event === "volume_retry").length, 2);
    const status = v.pipeline.snapshot();
    assert.equal(status.committedGeneration, 1);
    assert.equal(status.lastErrorCode, null, "a commit clears the last error");
  });
});

Deno.test("supervisor: when the session ends the volume is disconnected, not parked", async () => {
  await inTemp(async (root) => {
    const { log } = memoryLog();
    await using v = await localVolume(root, "vm", image(4), { log });
    let open = true;
    await superviseVolume(v.pipeline, {
      openLink: () => {
        open = false;
        return Promise.reject(
          new PresyncError(ErrorCode.CONNECTION_LOST, "link cut", { retryable: true }),
        );
      },
      alive: () => open,
      sleep: tick,
      log,
    });
    assert.equal(v.pipeline.snapshot().phase, "disconnected");
    assert.equal(v.pipeline.parked, false);
  });
});
