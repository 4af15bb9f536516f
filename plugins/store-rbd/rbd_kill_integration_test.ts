import assert from "node:assert/strict";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { ReplicaStore } from "../../agent/store/replica_store.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { needCeph } from "../../fixtures/ceph.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { KILL_SIZE, KILL_VOLUME, SeededSource } from "../../fixtures/seeded_generations.ts";
import { createTestPool } from "./_test_pool.ts";
import { RbdBackend } from "./rbd_backend.ts";

const ceph = await needCeph();
/** Kills in the suite; `scripts/rbd_kill_sweep.ts` runs 30. */
const KILLS = Number(Deno.env.get("PRESYNC_RBD_KILLS") ?? "6");
const KEEP = 3;
const CHILD = new URL("./_kill_child.ts", import.meta.url).pathname;
/** Longest wait for the child to say something. */
const LINE_TIMEOUT_MS = 60_000;

/** Reads the child's lines; `waitFor` resolves once a line matching `pattern` came. */
class Lines {
  readonly #lines: string[] = [];
  #wake: () => void = () => {};
  readonly done: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      let buffer = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const parts = buffer.split("\n");
        buffer = parts.pop()!;
        this.#lines.push(...parts);
        this.#wake();
      }
    })();
  }

  get last(): string | undefined {
    return this.#lines.at(-1);
  }

  async waitFor(pattern: RegExp, from = 0): Promise<number> {
    const deadline = Date.now() + LINE_TIMEOUT_MS;
    for (;;) {
      const at = this.#lines.findIndex((l, i) => i >= from && pattern.test(l));
      if (at >= 0) return at;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the child never printed ${pattern}: ${this.#lines}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((wake) => this.#wake = wake),
        new Promise<void>((wake) => timer = setTimeout(wake, Math.min(left, 500))),
        this.done,
      ]);
      clearTimeout(timer);
    }
  }
}

Deno.test({
  name: `kill -9 at ${KILLS} random instants of RBD commits: after recovery the head and the ` +
    "newest snapshot are the source at the committed generation, older snapshots pruned",
  ignore: ceph.ignore,
  fn: () =>
    withSeed(async (prng) => {
      const pool = await createTestPool("presync-kill");
      const stateDir = await Deno.makeTempDir({ prefix: "presync-rbd-kill-" });
      const backend = new RbdBackend({
        spec: { pool: pool.pool, confPath: pool.ceph.confPath },
        stateDir,
        fs: new DenoFileSystem(),
        keep: KEEP,
      });
      const store = new ReplicaStore(backend);
      const source = new SeededSource(prng.nextU32());
      const seen = { replayed: 0, insideCommit: 0, staging: 0 };
      let committed = 0;
      try {
        for (let kill = 0; kill < KILLS; kill++) {
          const child = new Deno.Command(Deno.execPath(), {
            args: [
              "run",
              "-A",
              CHILD,
              pool.ceph.confPath,
              pool.pool,
              stateDir,
              String(source.seed),
              String(KEEP),
            ],
            stdout: "piped",
            stderr: "null",
          }).spawn();
          const lines = new Lines(child.stdout);
          let killedInCommit = 0;
          try {
            const ready = await lines.waitFor(/^ready$/);
            // Past the seeding, into a commit: wait for one to start, then kill somewhere in
            // it (or in the staging of the next generation, for the longer delays).
            const at = await lines.waitFor(/^commit ([2-9]|\d\d+)$/, ready);
            await lines.waitFor(/^commit /, at + prng.int(2));
            await new Promise((resolve) => setTimeout(resolve, prng.int(250)));
            killedInCommit = Number(/^commit (\d+)$/.exec(lines.last ?? "")?.[1] ?? 0);
          } finally {
            child.kill("SIGKILL");
            const status = await child.status;
            await lines.done;
            assert.equal(status.signal, "SIGKILL", `kill ${kill}: exited by itself`);
          }
          const commitRecord = `${stateDir}/volumes/${KILL_VOLUME}/staging/COMMIT`;
          if (await new DenoFileSystem().exists(commitRecord)) seen.replayed++;
          // As recorded before recovery: a commit that had started is not in it yet.
          const recorded = (await store.readMeta(KILL_VOLUME)).committedGeneration;
          if (killedInCommit > recorded) seen.insideCommit++;
          else seen.staging++;
          const replica = await store.open(KILL_VOLUME);
          try {
            const g = replica.meta.committedGeneration;
            assert.ok(g >= committed, `kill ${kill}: generation ${g} after ${committed}`);
            committed = g;
            const volume = backend.volume(KILL_VOLUME);
            const head = await volume.openImage("read");
            const snapshot = await volume.openGeneration(g);
            try {
              for (const [what, image] of [["head", head], ["snapshot", snapshot]] as const) {
                const bytes = new Uint8Array(KILL_SIZE);
                await image.read(0, bytes);
                assertBytesEqual(bytes, source.image(g), `kill ${kill}: ${what} at ${g}`);
              }
            } finally {
              head.close();
              snapshot.close();
            }
            const report = await replica.verify({ expectedRoot: source.root(g) });
            assert.ok(report.ok, `kill ${kill}: the manifest disagrees with the image`);
            const kept = (await volume.generations()).map((s) => s.generation);
            assert.ok(kept.includes(g) && kept.every((k) => k > g - KEEP && k <= g), `${kept}`);
          } finally {
            replica.close();
          }
        }
      } finally {
        await backend.close();
        await pool.remove();
        await Deno.remove(stateDir, { recursive: true });
      }
      console.log(`generation ${committed} after ${KILLS} kills: ${JSON.stringify(seen)}`);
      assert.ok(seen.insideCommit > 0, "no kill landed inside a commit");
    }),
});
