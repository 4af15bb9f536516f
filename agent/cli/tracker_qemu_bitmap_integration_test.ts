import assert from "node:assert/strict";
import {
  agentArgs,
  controlFetch,
  freePort,
  PresyncProcess,
  serveArgs,
} from "../../fixtures/cluster.ts";
import { needTools, runTool, startQemuNbd } from "../../fixtures/nbd_tools.ts";
import { until } from "../../fixtures/until.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { writeNewKey } from "../key_file.ts";

const SIZE = 16 * 1024 * 1024;

const tools = await needTools(["qemu-img", "qemu-io", "qemu-nbd"]);

async function committedGeneration(socket: string): Promise<number> {
  const response = await controlFetch(socket, "GET", "/status");
  const volume = (await response.json() as { volumes: Record<string, unknown>[] }).volumes[0];
  return volume.state === "idle" ? Number(volume.committedGeneration) : 0;
}

Deno.test({
  name: "presync agent --tracker qemu-bitmap copies a new qcow2 disk whole from qemu-nbd --bitmap",
  ...tools,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "presync-qemu-bitmap-cli-" });
    let serve: PresyncProcess | undefined;
    let agent: PresyncProcess | undefined;
    const output = () => `--- serve\n${serve?.output}\n--- agent\n${agent?.output}`;
    try {
      // A qcow2 disk with data from before its bitmap was added: the first generation of a
      // new volume must copy the whole disk, not only what the bitmap recorded.
      const disk = `${root}/disk.qcow2`;
      await runTool("qemu-img", ["create", "-q", "-f", "qcow2", disk, String(SIZE)]);
      await runTool("qemu-io", ["-f", "qcow2", "-c", "write -P 0x33 8000000 300000", disk]);
      await runTool("qemu-img", ["bitmap", "--add", disk, "presync-1"]);
      await runTool("qemu-io", [
        "-f",
        "qcow2",
        "-c",
        "write -P 0x5a 65536 4096",
        "-c",
        "write -P 0x6b 3000000 200000",
        "-c",
        `write -P 0x7c ${SIZE - 65536} 65536`,
        disk,
      ]);
      await runTool("qemu-img", ["bitmap", "--disable", disk, "presync-1"]);
      await runTool("qemu-img", ["convert", "-O", "raw", disk, `${root}/expected.raw`]);
      const expected = await hashFile(`${root}/expected.raw`);
      const socket = `${root}/q.sock`;
      await using _qemu = await startQemuNbd(socket, [
        "--read-only",
        "--bitmap",
        "presync-1",
        "-f",
        "qcow2",
        "-x",
        "vm",
        disk,
      ]);
      await writeNewKey(`${root}/key`);
      const port = freePort();
      const common = ["--transport", "tcp", "--log-format", "json"];
      serve = new PresyncProcess(serveArgs(root, port, `${root}/serve.sock`, common));
      agent = new PresyncProcess(agentArgs(root, disk, port, `${root}/agent.sock`, [
        ...common,
        "--tracker",
        "qemu-bitmap",
        "--nbd-connect",
        `unix:${socket}`,
        "--bitmap",
        "presync-1",
      ]));
      await until(
        "generation 1 committed, the replica equal to the whole disk",
        async () =>
          (await committedGeneration(`${root}/agent.sock`)) >= 1 &&
          (await hashFile(`${root}/store/vm/image`)) === expected,
        { timeoutMs: 120_000, context: output },
      );
      // The volume took the export's size (16 MiB), not the qcow2 file's.
      assert.equal((await Deno.stat(`${root}/store/vm/image`)).size, SIZE);
    } finally {
      await agent?.kill("SIGTERM");
      await serve?.kill("SIGTERM");
      await Deno.remove(root, { recursive: true });
    }
  },
});
