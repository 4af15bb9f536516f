import assert from "node:assert/strict";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { createSparseImage, needTools, runTool } from "../../fixtures/nbd_tools.ts";
import { FileExport, NbdClient, NbdServer, nbdUri, parseNbdAddress } from "./mod.ts";

const SIZE = 4 * 1024 * 1024;

async function withServer(
  fn: (server: NbdServer, dir: string, image: string) => Promise<void>,
  readOnly = false,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "presync-nbd-" });
  const image = `${dir}/disk.img`;
  await createSparseImage(image, SIZE);
  const ex = await FileExport.open(image, { name: "disk", readOnly });
  const server = new NbdServer([ex]);
  try {
    await fn(server, dir, image);
  } finally {
    await server.close();
    await ex.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("our client reads, writes and flushes through our server; bad requests get errors", async () => {
  await withServer(async (server, dir) => {
    const address = await server.listen({ transport: "unix", path: `${dir}/s.sock` });
    const client = await NbdClient.connect(address, "disk", { metaContexts: ["base:allocation"] });
    try {
      assert.equal(client.sizeBytes, SIZE);
      await client.write(1000, new Uint8Array(5000).fill(3));
      await client.flush();
      assertBytesEqual(await client.read(1000, 5000), new Uint8Array(5000).fill(3), "read back");
      // The write allocated the file system blocks it touched; the rest is still a hole.
      assert.deepEqual(await client.blockStatus(0, SIZE, "base:allocation"), [
        { lengthBytes: 8192, flags: 0 },
        { lengthBytes: SIZE - 8192, flags: 3 },
      ]);
      await assertRejectsCode(client.read(SIZE - 10, 11), "NBD_REQUEST_FAILED");
      await assertRejectsCode(client.write(SIZE, new Uint8Array(1)), "NBD_REQUEST_FAILED");
      // The connection is still usable after errors.
      assert.deepEqual(await client.read(1000, 3), new Uint8Array(3).fill(3));
    } finally {
      await client.close();
    }
    await assertRejectsCode(NbdClient.connect(address, "nope"), "NBD_REQUEST_FAILED");
  });
});

Deno.test("parseNbdAddress reads HOST:PORT, [IPv6]:PORT and unix:PATH", () => {
  assert.deepEqual(parseNbdAddress("[::1]:10809"), {
    transport: "tcp",
    hostname: "::1",
    port: 10809,
  });
  assert.throws(() => parseNbdAddress("localhost"), /HOST:PORT/);
  assert.throws(() => parseNbdAddress("h:99999"), /HOST:PORT/);
});

const tools = await needTools(["nbdinfo", "nbdcopy", "qemu-io", "qemu-img"]);

Deno.test({
  name: "nbdinfo --list/--map, nbdcopy and qemu-io work against our server over TCP and unix",
  ...tools,
  async fn() {
    await withServer(async (server, dir, image) => {
      const unix = await server.listen({ transport: "unix", path: `${dir}/s.sock` });
      const tcp = await server.listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
      const list = await runTool("nbdinfo", ["--list", `nbd+unix:///?socket=${dir}/s.sock`]);
      assert.match(list.stdout, /export="disk"/);
      assert.match(list.stdout, /base:allocation/);
      const map = await runTool("nbdinfo", ["--map", nbdUri(tcp, "disk")]);
      assert.match(map.stdout, new RegExp(`^\\s*0\\s+${SIZE}\\s+3\\s+hole,zero`));
      const io = await runTool("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0x5a 12345 70000",
        "-c",
        "write -z 1048576 65536",
        "-c",
        "discard 2097152 4096",
        "-c",
        "flush",
        "-c",
        "read -P 0x5a 12345 70000",
        nbdUri(unix, "disk"),
      ]);
      assert.doesNotMatch(io.stdout + io.stderr, /fail/i);
      await runTool("nbdcopy", [nbdUri(tcp, "disk"), `${dir}/copy.img`]);
      assertBytesEqual(
        await Deno.readFile(`${dir}/copy.img`),
        await Deno.readFile(image),
        "nbdcopy out of our server",
      );
      // nbdcopy into our server (multi-conn writes), then back out.
      await createSparseImage(`${dir}/src.img`, SIZE);
      const src = await Deno.open(`${dir}/src.img`, { write: true });
      await src.write(crypto.getRandomValues(new Uint8Array(65536)));
      src.close();
      await runTool("nbdcopy", [`${dir}/src.img`, nbdUri(tcp, "disk")]);
      assertBytesEqual(
        await Deno.readFile(image),
        await Deno.readFile(`${dir}/src.img`),
        "nbdcopy into our server",
      );
    });
  },
});

Deno.test({
  name:
    "qemu-img bench at queue depth 32 (pipelined requests) writes every block; qemu-io reads them back",
  ...tools,
  async fn() {
    await withServer(async (server, dir, image) => {
      const uri = nbdUri(await server.listen({ transport: "unix", path: `${dir}/s.sock` }), "disk");
      const blocks = String(SIZE / 4096);
      for (const pattern of ["0x6b", "0x2c"]) {
        await runTool("qemu-img", [
          "bench",
          "-w",
          "-f",
          "raw",
          "-t",
          "none",
          "-d",
          "32",
          "-s",
          "4096",
          "-c",
          blocks,
          `--pattern=${pattern}`,
          uri,
        ]);
        await runTool("qemu-img", [
          "bench",
          "-f",
          "raw",
          "-d",
          "32",
          "-s",
          "4096",
          "-c",
          blocks,
          uri,
        ]);
        const io = await runTool("qemu-io", [
          "-f",
          "raw",
          "-c",
          `read -P ${pattern} 0 ${SIZE}`,
          uri,
        ]);
        assert.doesNotMatch(io.stdout + io.stderr, /fail|mismatch/i);
      }
      assertBytesEqual(await Deno.readFile(image), new Uint8Array(SIZE).fill(0x2c), "the image");
    });
  },
});
