import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { createSparseImage, needTools, runTool } from "../../fixtures/nbd_tools.ts";
import { FileExport, NbdServer, nbdUri, PositionalFile, zeroFileRange } from "./mod.ts";

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const tools = await needTools(["nbdinfo", "qemu-io", "qemu-img"]);

/** One line of `nbdinfo --map`: offset, length, type (bit 0 hole, bit 1 zero). */
interface MapLine {
  offset: number;
  length: number;
  type: number;
}

async function nbdinfoMap(uri: string): Promise<MapLine[]> {
  const out = await runTool("nbdinfo", ["--map", uri]);
  return out.stdout.trim().split("\n").map((line) => {
    const [offset, length, type] = line.trim().split(/\s+/).map(Number);
    return { offset, length, type };
  });
}

/** The map type covering byte `at` (3 = hole,zero; 0 = data). */
function typeAt(map: MapLine[], at: number): number {
  const line = map.find((l) => l.offset <= at && at < l.offset + l.length);
  assert.ok(line, `no map line covers ${at}: ${JSON.stringify(map)}`);
  return line.type;
}

/** `qemu-img map --output=json` entries: start, length, data, zero. */
async function qemuImgMap(uri: string) {
  const out = await runTool("qemu-img", ["map", "-f", "raw", "--output=json", uri]);
  return JSON.parse(out.stdout) as {
    start: number;
    length: number;
    data: boolean;
    zero: boolean;
  }[];
}

/**
 * Asserts `path` has `expected` bytes of data allocated (stat blocks), allowing up to 16 KiB
 * more: ext4 counts the extent-tree blocks a split of the extents needs.
 */
async function assertAllocated(path: string, expected: number): Promise<void> {
  const bytes = ((await Deno.stat(path)).blocks ?? 0) * 512;
  assert.ok(
    bytes >= expected && bytes <= expected + 16 * 1024,
    `${path} has ${bytes} bytes allocated; expected ${expected}`,
  );
}

async function qemuIo(uri: string, ...commands: string[]): Promise<string> {
  const out = await runTool("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), uri]);
  const text = out.stdout + out.stderr;
  assert.doesNotMatch(text, /fail|mismatch|error/i, text);
  return text;
}

/** An image of `SIZE` filled with 0xaa in `dir`, served by our server over a unix socket. */
async function withFilledExport(
  dir: string,
  fn: (uri: string, image: string) => Promise<void>,
): Promise<void> {
  const image = `${dir}/disk.img`;
  await createSparseImage(image, SIZE);
  const ex = await FileExport.open(image, { name: "disk" });
  const server = new NbdServer([ex]);
  try {
    const uri = nbdUri(await server.listen({ transport: "unix", path: `${dir}/s.sock` }), "disk");
    await qemuIo(uri, `write -P 0xaa 0 ${SIZE}`, "flush");
    await fn(uri, image);
  } finally {
    await server.close();
    await ex.close();
  }
}

Deno.test({
  name: "WRITE_ZEROES punches a hole: the range is unallocated, nbdinfo and qemu-img map it " +
    "as hole/zero, and it reads as zeros; NO_HOLE keeps it allocated",
  ...tools,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-holes-" });
    try {
      await withFilledExport(dir, async (uri, image) => {
        await assertAllocated(image, SIZE);
        const before = await nbdinfoMap(uri);
        assert.deepEqual(before, [{ offset: 0, length: SIZE, type: 0 }]);

        // qemu-io `write -z -u` sends WRITE_ZEROES without NO_HOLE (may unmap).
        await qemuIo(uri, `write -z -u ${1 * MiB} ${2 * MiB}`, "flush");
        await assertAllocated(image, SIZE - 2 * MiB);
        const map = await nbdinfoMap(uri);
        assert.deepEqual(map, [
          { offset: 0, length: 1 * MiB, type: 0 },
          { offset: 1 * MiB, length: 2 * MiB, type: 3 },
          { offset: 3 * MiB, length: 5 * MiB, type: 0 },
        ]);
        const qmap = await qemuImgMap(uri);
        const hole = qmap.find((e) => e.start === 1 * MiB);
        assert.deepEqual(hole && { ...hole, offset: undefined }, {
          start: 1 * MiB,
          length: 2 * MiB,
          depth: 0,
          present: true,
          data: false,
          zero: true,
          offset: undefined,
        });
        await qemuIo(uri, `read -P 0 ${1 * MiB} ${2 * MiB}`, `read -P 0xaa 0 ${1 * MiB}`);

        // Plain `write -z` sets NO_HOLE: zeros, but the space stays allocated.
        await qemuIo(uri, `write -z ${4 * MiB} ${1 * MiB}`, "flush");
        await assertAllocated(image, SIZE - 2 * MiB);
        await qemuIo(uri, `read -P 0 ${4 * MiB} ${1 * MiB}`, `read -P 0xaa ${3 * MiB} ${MiB}`);

        // TRIM punches too.
        await qemuIo(uri, `discard ${6 * MiB} ${1 * MiB}`, "flush");
        await assertAllocated(image, SIZE - 3 * MiB);
        assert.equal(typeAt(await nbdinfoMap(uri), 6 * MiB + 4096), 3);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "an unaligned WRITE_ZEROES zeroes exactly its bytes and frees only whole blocks inside",
  ...tools,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-holes-" });
    try {
      await withFilledExport(dir, async (uri, image) => {
        // 5000..15000: file system blocks 8192..12288 lie wholly inside.
        await qemuIo(uri, "write -z -u 5000 10000", "flush");
        await qemuIo(
          uri,
          "read -P 0xaa 0 5000",
          "read -P 0 5000 10000",
          `read -P 0xaa 15000 ${SIZE - 15000}`,
        );
        const blockBytes = 4096;
        await assertAllocated(image, SIZE - blockBytes);
        const map = await nbdinfoMap(uri);
        assert.equal(typeAt(map, 4096), 0, "the partial block before stays data");
        assert.equal(typeAt(map, 8192), 3);
        assert.equal(typeAt(map, 12288), 0, "the partial block after stays data");
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "on a file system that refuses hole punching (ramfs) WRITE_ZEROES falls back to " +
    "writing zeros, and BLOCK_STATUS reports data",
  ...tools,
  ignore: tools.ignore || Deno.uid?.() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-ramfs-" });
    const mounted = await new Deno.Command("mount", {
      args: ["-t", "ramfs", "ramfs", dir],
      stderr: "piped",
    }).output();
    assert.ok(mounted.success, `mount ramfs: ${new TextDecoder().decode(mounted.stderr)}`);
    try {
      const probe = await PositionalFile.open(`${dir}/probe`, { create: true });
      try {
        await probe.truncate(1 * MiB);
        assert.equal(await probe.punchHole(0, 4096), false, "ramfs refuses punching");
        assert.equal(await probe.zeroRange(0, 4096), false, "ramfs refuses zero range");
        await probe.write(0, new Uint8Array(8192).fill(7));
        assert.equal(await zeroFileRange(probe, 100, 5000), "written");
        const back = await probe.read(0, new Uint8Array(8192));
        assertBytesEqual(back.subarray(100, 5100), new Uint8Array(5000), "the zeroed range");
        assert.equal(back[99], 7);
        assert.equal(back[5100], 7);
      } finally {
        await probe.close();
      }
      await withFilledExport(dir, async (uri) => {
        await qemuIo(uri, `write -z -u ${1 * MiB} ${2 * MiB}`, "discard 0 65536", "flush");
        await qemuIo(uri, `read -P 0 ${1 * MiB} ${2 * MiB}`, `read -P 0xaa ${3 * MiB} ${MiB}`);
        assert.deepEqual(await nbdinfoMap(uri), [{ offset: 0, length: SIZE, type: 0 }]);
      });
    } finally {
      await new Deno.Command("umount", { args: [dir] }).output();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "NO_HOLE zeros that do not fit (a full tmpfs, which cannot zero in place) fail with " +
    "ENOSPC, and the connection keeps serving",
  ...tools,
  ignore: tools.ignore || Deno.uid?.() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "presync-tmpfs-" });
    const mounted = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir],
      stderr: "piped",
    }).output();
    assert.ok(mounted.success, `mount tmpfs: ${new TextDecoder().decode(mounted.stderr)}`);
    try {
      await createSparseImage(`${dir}/disk.img`, 4 * MiB);
      const ex = await FileExport.open(`${dir}/disk.img`, { name: "disk" });
      const server = new NbdServer([ex]);
      try {
        const address = await server.listen({ transport: "unix", path: `${dir}/s.sock` });
        const uri = nbdUri(address, "disk");
        const out = await runTool("qemu-io", [
          "-f",
          "raw",
          "-c",
          `write -z 0 ${2 * MiB}`, // NO_HOLE: needs 2 MiB of space
          "-c",
          `write -z -u ${2 * MiB} ${2 * MiB}`, // a hole: needs none
          "-c",
          `read -P 0 ${2 * MiB} ${2 * MiB}`,
          uri,
        ], -1);
        const text = out.stdout + out.stderr;
        assert.match(text, /No space left on device/);
        assert.match(text, /read 2097152\/2097152 bytes/);
      } finally {
        await server.close();
        await ex.close();
      }
    } finally {
      await new Deno.Command("umount", { args: [dir] }).output();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
