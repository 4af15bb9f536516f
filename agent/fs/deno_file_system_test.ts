import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import { canMountTmpfs, withTmpfs } from "../../fixtures/tmpfs.ts";
import { DenoFileSystem } from "./deno_file_system.ts";
import type { FileSystem } from "./file_system.ts";

const MiB = 1024 * 1024;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "presync-fs-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

seededTest(
  "positioned reads and writes issued together land where they were asked",
  async (prng) => {
    await withTempDir(async (dir) => {
      const fs = new DenoFileSystem();
      const file = await fs.open(`${dir}/f`, { create: true });
      // Small ones (synchronous) and large ones (thread pool) at once, disjoint ranges.
      const pieces = Array.from({ length: 24 }, (_, i) => ({
        offset: i * 256 * 1024,
        data: prng.fill(new Uint8Array(i % 2 ? 200 * 1024 : 1000 + i)),
      }));
      await Promise.all(pieces.map((p) => file.write(p.offset, p.data)));
      const back = await Promise.all(pieces.map(async (p) => {
        const into = new Uint8Array(p.data.length);
        assert.equal(await file.read(p.offset, into), p.data.length);
        return into;
      }));
      back.forEach((b, i) => assertBytesEqual(b, pieces[i].data, `piece ${i}`));
      const size = await file.size();
      assert.equal(await file.read(size - 10, new Uint8Array(100)), 10, "short only at the end");
      file.close();
      file.close();
    });
  },
);

Deno.test("a missing file is NotFound, as the FileSystem contract says", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(new DenoFileSystem().open(`${dir}/nope`), Deno.errors.NotFound);
  });
});

/** The allocate / punchHole / allocatedBytes contract, on a file system that can. */
async function checkAllocation(fs: FileSystem, path: string): Promise<void> {
  const file = await fs.open(path, { create: true });
  try {
    await file.truncate(8 * MiB);
    await file.write(0, new Uint8Array(4096).fill(7));
    const before = await fs.allocatedBytes(path);
    assert.ok(before < MiB, `a sparse file: ${before} bytes allocated`);
    assert.equal(await file.allocate(0, 4 * MiB), true);
    assert.ok(await fs.allocatedBytes(path) >= 4 * MiB, "claimed");
    const head = new Uint8Array(8192);
    await file.read(0, head);
    assertBytesEqual(head.subarray(0, 4096), new Uint8Array(4096).fill(7), "content kept");
    assertBytesEqual(head.subarray(4096), new Uint8Array(4096), "claimed space reads zeros");
    assert.equal(await file.punchHole(0, 4 * MiB), true);
    assert.ok(await fs.allocatedBytes(path) < MiB, "punched");
    await file.read(0, head);
    assertBytesEqual(head, new Uint8Array(8192), "a hole reads as zeros");
    assert.equal(await file.size(), 8 * MiB, "the size stays");
  } finally {
    file.close();
  }
}

Deno.test("allocate claims space without changing content; punchHole frees it", async () => {
  await withTempDir((dir) => checkAllocation(new DenoFileSystem(), `${dir}/sparse`));
  await checkAllocation(new PowerCutFileSystem(), "/sparse");
});

Deno.test({
  name: "allocate on a full disk (tmpfs) throws ENOSPC, before any byte is written",
  ignore: !canMountTmpfs,
  fn: () =>
    withTmpfs("1m", async (mount) => {
      const file = await new DenoFileSystem().open(`${mount}/f`, { create: true });
      await file.truncate(4 * MiB);
      await assert.rejects(file.allocate(0, 4 * MiB), (err: Error & { code?: string }) => {
        assert.equal(err.code, "ENOSPC");
        return true;
      });
      file.close();
    }),
});

Deno.test({
  name: "a large write (on another thread) into a full disk (tmpfs) throws ENOSPC as node:fs does",
  ignore: !canMountTmpfs,
  fn: () =>
    withTmpfs("1m", async (mount) => {
      const file = await new DenoFileSystem().open(`${mount}/f`, { create: true });
      await assert.rejects(
        file.write(0, new Uint8Array(2 * MiB).fill(1)),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, "ENOSPC");
          return true;
        },
      );
      file.close();
    }),
});

/** The tryLock contract: shared locks coexist, an exclusive one excludes all others. */
async function checkLocks(fs: FileSystem, path: string): Promise<void> {
  const a = await fs.tryLock(path, "shared");
  const b = await fs.tryLock(path, "shared");
  assert.ok(a && b, "two shared locks");
  assert.equal(await fs.tryLock(path, "exclusive"), null, "exclusive waits for no one");
  a.release();
  assert.equal(await fs.tryLock(path, "exclusive"), null, "one shared lock is still held");
  b.release();
  b.release();
  const c = await fs.tryLock(path, "exclusive");
  assert.ok(c, "free again");
  assert.equal(await fs.tryLock(path, "shared"), null, "exclusive excludes shared");
  c[Symbol.dispose]();
  assert.ok(await fs.tryLock(path, "shared"));
  await assert.rejects(fs.tryLock(`${path}/missing`, "shared"), Deno.errors.NotFound);
}

Deno.test("tryLock on a directory: shared locks coexist, exclusive excludes, never waits", async () => {
  await withTempDir((dir) => checkLocks(new DenoFileSystem(), dir));
  const memory = new PowerCutFileSystem();
  await memory.mkdir("/d");
  await checkLocks(memory, "/d");
});

Deno.test("a lock held by another process excludes this one until that process dies", async () => {
  await withTempDir(async (dir) => {
    const holder = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { DenoFileSystem } from ${
          JSON.stringify(new URL("./deno_file_system.ts", import.meta.url).href)
        };
         const lock = await new DenoFileSystem().tryLock(${JSON.stringify(dir)}, "exclusive");
         console.log(lock ? "locked" : "refused");
         setInterval(() => {}, 1000);`,
      ],
      stdout: "piped",
    }).spawn();
    const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let said = "";
      while (!said.includes("\n")) {
        const { value, done } = await reader.read();
        assert.ok(!done, `the lock holder ended: ${said}`);
        said += value;
      }
      assert.equal(said.trim(), "locked");
      assert.equal(await new DenoFileSystem().tryLock(dir, "shared"), null);
    } finally {
      holder.kill("SIGKILL");
      await holder.status;
      reader.releaseLock();
      await holder.stdout.cancel().catch(() => {});
    }
    const after = await new DenoFileSystem().tryLock(dir, "exclusive");
    assert.ok(after, "the kernel released the dead process's lock");
    after.release();
  });
});
