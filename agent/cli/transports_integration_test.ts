import assert from "node:assert/strict";
import { quicAvailable } from "../../plugins/transport-quic/mod.ts";
import { waitConverged } from "../../fixtures/chaos.ts";
import {
  agentArgs,
  Cluster,
  controlFetch,
  freePort,
  PresyncProcess,
  serveArgs,
} from "../../fixtures/cluster.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { until } from "../../fixtures/until.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { writeNewKey } from "../key_file.ts";
import { KNOWN_SERVERS_FILE, SERVER_TLS_DIR } from "../registry/mod.ts";
import { ExitCode } from "./exit_codes.ts";

const MiB = 1024 * 1024;

async function withRoot(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-transports-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Random data, then a zero MiB: both the compressed and the zero-marker paths. */
async function makeImage(path: string, prng: Prng): Promise<void> {
  const bytes = new Uint8Array(4 * MiB);
  prng.fill(bytes.subarray(0, 3 * MiB));
  await Deno.writeFile(path, bytes);
}

async function committed(control: string): Promise<number> {
  const response = await controlFetch(control, "GET", "/status");
  const status = await response.json() as { volumes: Record<string, unknown>[] };
  const volume = status.volumes[0];
  return volume.state === "idle" ? Number(volume.committedGeneration) : 0;
}

seededTest(
  "serve and agent over --transport quic commit a generation (agent trusts serve's cert.pem)",
  async (prng) => {
    if (!quicAvailable()) return console.warn("SKIPPED: Deno's QUIC API is not available");
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await makeImage(image, prng);
      const expected = await hashFile(image);
      await writeNewKey(`${root}/key`);
      const port = freePort();
      const common = ["--transport", "quic", "--idle-timeout", "3", "--log-format", "json"];
      const serve = new PresyncProcess(serveArgs(root, port, `${root}/serve.sock`, common));
      let agent: PresyncProcess | undefined;
      const context = () => `--- serve\n${serve.output}\n--- agent\n${agent?.output}`;
      try {
        const cert = `${root}/store/${SERVER_TLS_DIR}/cert.pem`;
        await until("serve's certificate", () => Deno.stat(cert).then(() => true), {
          timeoutMs: 60_000,
          context,
        });
        agent = new PresyncProcess(
          agentArgs(root, image, port, `${root}/agent.sock`, [...common, "--tls-ca", cert]),
        );
        await until(
          "generation 1 committed over QUIC",
          async () =>
            (await committed(`${root}/agent.sock`)) >= 1 &&
            (await hashFile(`${root}/store/vm/image`)) === expected,
          { timeoutMs: 120_000, context },
        );
        assert.match(serve.output, /QUIC agents cannot pin on first contact/);
      } finally {
        await agent?.kill("SIGTERM");
        await serve.kill("SIGTERM");
      }
      assert.ok(!/Uncaught/.test(context()), context());
    });
  },
);

seededTest(
  "agent --stripes 2 to serve --striped over TLS: pins serve's certificate and commits",
  async (prng) => {
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await makeImage(image, prng);
      const cluster = await Cluster.start({
        root,
        image,
        serveArgs: ["--striped"],
        agentArgs: ["--stripes", "2"],
      });
      try {
        await waitConverged(cluster, image);
        const pins = JSON.parse(await Deno.readTextFile(`${root}/state/${KNOWN_SERVERS_FILE}`));
        assert.equal(Object.keys(pins).length, 1, "one server pinned on first contact");
        for (const process of [cluster.serve, cluster.agent]) {
          assert.ok(!process.exited, `a process ended:\n${process.output}`);
          assert.ok(!/Uncaught/.test(process.output), process.output);
        }
      } finally {
        await cluster.stop();
      }
    });
  },
);

/** Runs `presync agent` with `args` expecting it to exit by itself; returns its exit code. */
async function agentExit(root: string, args: string[]): Promise<{ code: number; output: string }> {
  await writeNewKey(`${root}/key`).catch(() => {});
  await Deno.writeFile(`${root}/img`, new Uint8Array(65536));
  // Port 9 (discard): nothing is ever sent; every case fails before connecting.
  const agent = new PresyncProcess(agentArgs(root, `${root}/img`, 9, `${root}/agent.sock`, args));
  const status = await agent.wait(60_000);
  return { code: status.code, output: agent.output };
}

Deno.test("agent: unknown plugin names exit 2 listing what this build has", async () => {
  await withRoot(async (root) => {
    for (
      const [flag, value, known] of [
        ["--tracker", "qemu-dirty", /scan, nbd, qemu-bitmap/],
        ["--transport", "udp", /tls, tcp, quic/],
        ["--codec", "lz4", /zstd-native, zstd-wasm, none/],
      ] as const
    ) {
      const { code, output } = await agentExit(root, [flag, value]);
      assert.equal(code, ExitCode.USAGE, output);
      assert.match(output, new RegExp(`${flag} "${value}": no such`));
      assert.match(output, known);
      assert.match(output, /PLUGIN_UNKNOWN/);
    }
  });
});

Deno.test("agent: --transport quic without --tls-ca, and bad --stripes, exit 2 saying why", async () => {
  await withRoot(async (root) => {
    const quic = await agentExit(root, ["--transport", "quic", "--tls-pin", "ab".repeat(32)]);
    assert.equal(quic.code, ExitCode.USAGE, quic.output);
    assert.match(quic.output, /--transport quic needs --tls-ca FILE/);
    assert.match(quic.output, /--tls-pin is not possible over QUIC/);
    for (const stripes of ["0", "17", "2.5", "two"]) {
      const bad = await agentExit(root, ["--stripes", stripes]);
      assert.equal(bad.code, ExitCode.USAGE, bad.output);
      assert.match(bad.output, /--stripes must be a whole number of connections from 1 to 16/);
    }
    const bitmap = await agentExit(root, ["--tracker", "qemu-bitmap", "--bitmap", "presync-1"]);
    assert.equal(bitmap.code, ExitCode.USAGE, bitmap.output);
    assert.match(bitmap.output, /--tracker qemu-bitmap serves one volume: .*--nbd-connect/);
  });
});
