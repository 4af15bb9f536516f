import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { Cluster, PresyncProcess } from "../../fixtures/cluster.ts";
import { waitConverged } from "../../fixtures/chaos.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { seededTest } from "../../fixtures/seeded.ts";
import { hashFile } from "../../fixtures/workload.ts";
import { pauseHook, writeUntilPaused } from "../../fixtures/vm_pause.ts";
import { DenoFileSystem } from "../fs/deno_file_system.ts";
import { ReplicaStore } from "../store/replica_store.ts";
import { DirectoryBackend } from "../../plugins/store-directory/mod.ts";
import { ExitCode } from "../cli/exit_codes.ts";
import { hasOpenssl, makeTestCerts } from "../../fixtures/test_certs.ts";
import { needTools, runTool } from "../../fixtures/nbd_tools.ts";
import { certificateFingerprint } from "../../plugins/transport-tls/mod.ts";

const MiB = 1024 * 1024;

async function makeImage(path: string, prng: Prng, sizeBytes: number, dataBytes: number) {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  await file.truncate(sizeBytes);
  await file.write(prng.fill(new Uint8Array(dataBytes)));
  file.close();
}

async function withRoot(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-e2e-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const LINK = { delayMs: 5, rateBitsPerSecond: 100e6, queueBytes: 256 * 1024 };

seededTest(
  "ten link cuts during sync: converges, and moves at most 5% more than an uncut run",
  async (
    prng,
  ) => {
    const bytesOf = async (cuts: boolean): Promise<number> => {
      let up = 0;
      await withRoot(async (root) => {
        const image = `${root}/source.img`;
        await makeImage(image, prng, 64 * MiB, 40 * MiB);
        const cluster = await Cluster.start({
          root,
          image,
          wan: {
            up: LINK,
            down: LINK,
            cuts: cuts
              ? Array.from(
                { length: 10 },
                (_, i) => ({ atMs: 1500 + i * 350, durationMs: 100, mode: "reset" as const }),
              )
              : [],
          },
        });
        try {
          await waitConverged(cluster, image);
          const counters = cluster.emu.counters();
          if (cuts) assert.ok(counters.cuts >= 10, `only ${counters.cuts} cuts happened`);
          up = counters.up.bytesOut;
        } finally {
          await cluster.stop();
        }
      });
      return up;
    };
    const uncut = await bytesOf(false);
    const cut = await bytesOf(true);
    console.log(
      `bytes on the link: ${uncut} uncut, ${cut} with cuts (${(cut / uncut).toFixed(3)}×)`,
    );
    assert.ok(
      cut <= 1.05 * uncut,
      `with cuts ${cut} bytes, without ${uncut} (${(cut / uncut).toFixed(3)}×)`,
    );
  },
);

seededTest(
  "a blackholed link: both agents notice, reconnect and converge, nothing unhandled",
  async (prng) => {
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await makeImage(image, prng, 32 * MiB, 32 * MiB);
      const link = { delayMs: 20, rateBitsPerSecond: 50e6, queueBytes: 1 << 20 };
      const cluster = await Cluster.start({
        root,
        image,
        wan: {
          up: link,
          down: link,
          cuts: [
            { atMs: 2000, durationMs: 4000, mode: "blackhole" },
            { atMs: 9000, durationMs: 4000, mode: "blackhole" },
          ],
        },
      });
      try {
        await waitConverged(cluster, image);
        assert.ok(cluster.emu.counters().cuts >= 1, "the cut happened");
        // The second cut comes while the agent is idle (it cuts a generation every second).
        await cluster.waitFor(
          "the second cut",
          () => Promise.resolve(cluster.emu.counters().cuts >= 2),
        );
        const before = Number((await cluster.volumeStatus()).committedGeneration);
        await cluster.waitFor(
          "a generation after it",
          async () =>
            Number((await cluster.volumeStatus()).committedGeneration) > before + 1 &&
            !cluster.emu.isCut,
        );
        for (const process of [cluster.agent, cluster.serve]) {
          assert.doesNotMatch(process.output, /unhandled_rejection/, process.output);
        }
      } finally {
        await cluster.stop();
      }
    });
  },
);

seededTest(
  "SIGKILL of the destination, then of the source: never torn, no full resend",
  async (prng) => {
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await makeImage(image, prng, 80 * MiB, 64 * MiB);
      await makeImage(`${root}/zeros.img`, prng, 80 * MiB, 0);
      const zeroHash = await hashFile(`${root}/zeros.img`);
      const sourceHash = await hashFile(image);
      const cluster = await Cluster.start({ root, image, wan: { up: LINK, down: LINK } });
      try {
        // Mid-generation: some of the 64 MiB have been sent and flushed.
        const sendingBelow = (bytes: number) => async () => {
          const status = await cluster.volumeStatus();
          const pending = Number(status.pendingBytes);
          return status.state === "sending" && pending > 0 && pending < bytes;
        };
        await cluster.waitFor("a first acknowledgement", sendingBelow(40 * MiB));
        await cluster.serve.kill();
        const replica = await new ReplicaStore(
          new DirectoryBackend(new DenoFileSystem(), `${root}/store`),
        ).open("vm");
        const committed = replica.meta.committedGeneration;
        // Seeding its first generation in place, a replica claims no generation at all: it
        // is neither verified nor exported until that generation commits.
        const initialising = replica.initialising;
        if (initialising) await assertRejectsCode(replica.verify(), "VOLUME_INITIALISING");
        replica.close();
        const replicaHash = await hashFile(`${root}/store/vm/image`);
        if (!initialising) {
          assert.equal(replicaHash, committed === 0 ? zeroHash : sourceHash, "the replica is torn");
        }
        cluster.startServe();
        await cluster.waitFor("more progress", sendingBelow(20 * MiB));
        await cluster.agent.kill();
        cluster.startAgent();
        await waitConverged(cluster, image);
        const sent = cluster.emu.counters().up.bytesOut;
        assert.ok(
          sent < 1.5 * 64 * MiB,
          `${sent} bytes crossed the link for 64 MiB of data: a full resend`,
        );
      } finally {
        await cluster.stop();
      }
    });
  },
);

seededTest(
  "evacuate during a write workload: the replica equals the source at the final cut",
  async (prng) => {
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await makeImage(image, prng, 32 * MiB, 8 * MiB);
      const hook = pauseHook(root);
      const cluster = await Cluster.start({
        root,
        image,
        wan: { up: LINK, down: LINK },
        agentArgs: ["--evacuate-hook", hook],
      });
      try {
        await waitConverged(cluster, image);
        // The "VM": random 4 KiB writes until the hook asks it to pause.
        const vm = writeUntilPaused(root, image, prng, () => prng.int(32 * MiB / 4096), 2);
        await new Promise((resolve) => setTimeout(resolve, 1500));
        const reply = await cluster.control("POST", "/volumes/vm/evacuate");
        await vm;
        const report = reply.result as { verified: boolean; generation: number };
        assert.equal(reply.ok, true, JSON.stringify(reply));
        assert.equal(report.verified, true);
        assert.equal(await hashFile(`${root}/store/vm/image`), await hashFile(image));
      } finally {
        await cluster.stop();
      }
    });
  },
);

seededTest("a paused agent stops on SIGTERM in the middle of a generation", async (prng) => {
  await withRoot(async (root) => {
    const image = `${root}/source.img`;
    await makeImage(image, prng, 32 * MiB, 32 * MiB);
    const link = { delayMs: 5, rateBitsPerSecond: 20e6, queueBytes: 256 * 1024 };
    const cluster = await Cluster.start({ root, image, wan: { up: link, down: link } });
    try {
      await cluster.waitFor(
        "sending",
        async () => (await cluster.volumeStatus()).state === "sending",
      );
      await cluster.control("POST", "/volumes/vm/pause");
      await cluster.waitFor(
        "paused",
        async () => (await cluster.volumeStatus()).state === "paused",
      );
      // Let the blocks in flight drain, so the sender waits at the pause gate.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      cluster.agent.child.kill("SIGTERM");
      // Before the fix the volume loop waited at the pause gate forever.
      const exited = await Promise.race([
        cluster.agent.wait().then((status) => status.code),
        new Promise<string>((resolve) => setTimeout(() => resolve("still running"), 30_000)),
      ]);
      assert.equal(exited, ExitCode.OK, cluster.agent.output);
    } finally {
      await cluster.stop();
    }
  });
});

Deno.test("a wrong key is refused: the agent exits with the auth code, nothing is written", async () => {
  await withRoot(async (root) => {
    const image = `${root}/source.img`;
    await Deno.writeFile(image, new Uint8Array(1024 * 1024).fill(1));
    const cluster = await Cluster.start({ root, image });
    try {
      await waitConverged(cluster, image);
      await cluster.agent.kill("SIGTERM");
      const { writeNewKey } = await import("../key_file.ts");
      await writeNewKey(`${root}/other.key`);
      const intruder = new PresyncProcess([
        "agent",
        "--volume",
        `intruder=${image}`,
        "--to",
        `127.0.0.1:${cluster.servePort}`,
        "--key-file",
        `${root}/other.key`,
        "--state",
        `${root}/intruder-state`,
        "--control",
        `${root}/intruder.sock`,
      ]);
      const status = await intruder.wait();
      assert.equal(status.code, ExitCode.AUTH_FAILED, intruder.output);
      assert.match(intruder.output, /AUTH_FAILED/);
      assert.match(cluster.serve.output, /auth_failed/);
      assert.deepStrictEqual(
        await new ReplicaStore(new DirectoryBackend(new DenoFileSystem(), `${root}/store`)).list(),
        [
          "vm",
        ],
      );
    } finally {
      await cluster.stop();
    }
  });
});

Deno.test("path-like and oversized volume names are refused before anything is written", async () => {
  await withRoot(async (root) => {
    await Deno.writeFile(`${root}/key`, new TextEncoder().encode("ab".repeat(32)));
    for (const name of ["../x", "a/b", "", "x".repeat(300)]) {
      const agent = new PresyncProcess([
        "agent",
        "--volume",
        `${name}=${root}/img`,
        "--to",
        "127.0.0.1:1",
        "--key-file",
        `${root}/key`,
        "--state",
        `${root}/state`,
      ]);
      const status = await agent.wait();
      assert.equal(status.code, ExitCode.USAGE, `${JSON.stringify(name)}: ${agent.output}`);
      assert.match(agent.output, /--volume|volume name/);
    }
    assert.deepStrictEqual([...Deno.readDirSync(root)].map((e) => e.name), ["key"]);
  });
});

Deno.test({
  name: "over TLS the pinned server is accepted and a wrong fingerprint is refused",
  ignore: !hasOpenssl(),
  fn: async () => {
    await withRoot(async (root) => {
      const certs = await makeTestCerts();
      await Deno.writeTextFile(`${root}/cert.pem`, certs.certPem);
      await Deno.writeTextFile(`${root}/key.pem`, certs.keyPem);
      const pin = await certificateFingerprint(certs.certPem);
      const image = `${root}/source.img`;
      await Deno.writeFile(image, new Uint8Array(2 * MiB).fill(3));
      const cluster = await Cluster.start({
        root,
        image,
        serveArgs: [
          "--transport",
          "tls",
          "--tls-cert",
          `${root}/cert.pem`,
          "--tls-key",
          `${root}/key.pem`,
        ],
        agentArgs: ["--transport", "tls", "--tls-pin", pin],
      });
      try {
        await waitConverged(cluster, image);
        const wrong = new PresyncProcess([
          "agent",
          "--volume",
          `other=${image}`,
          "--to",
          `127.0.0.1:${cluster.servePort}`,
          "--key-file",
          `${root}/key`,
          "--state",
          `${root}/other-state`,
          "--control",
          `${root}/other.sock`,
          "--transport",
          "tls",
          "--tls-pin",
          "00".repeat(32),
        ]);
        const status = await wrong.wait();
        assert.equal(status.code, ExitCode.AUTH_FAILED, wrong.output);
        assert.match(wrong.output, /PEER_UNTRUSTED/);
        assert.deepStrictEqual(
          await new ReplicaStore(new DirectoryBackend(new DenoFileSystem(), `${root}/store`))
            .list(),
          ["vm"],
        );
      } finally {
        await cluster.stop();
      }
    });
  },
});

Deno.test("commands naming a volume the agent does not have are refused by name", async () => {
  await withRoot(async (root) => {
    const image = `${root}/source.img`;
    await Deno.writeFile(image, new Uint8Array(MiB).fill(5));
    const cluster = await Cluster.start({ root, image });
    try {
      for (const action of ["evacuate", "pause", "verify"]) {
        const reply = await cluster.control("POST", `/volumes/nosuch/${action}`);
        assert.equal(reply.ok, false);
        assert.equal(reply.code, "VOLUME_NOT_FOUND", JSON.stringify(reply));
        assert.match(String(reply.message), /no volume named "nosuch"/);
      }
      const cli = new PresyncProcess([
        "evacuate",
        "nosuch",
        "--control",
        cluster.agentControl,
      ]);
      assert.equal((await cli.wait()).code, ExitCode.FAILURE);
      assert.match(cli.output, /VOLUME_NOT_FOUND/);
    } finally {
      await cluster.stop();
    }
  });
});

Deno.test({
  name: "agent --tracker nbd: the VM writes through presync's NBD server, evacuation moves them",
  ...(await needTools(["qemu-io", "qemu-img"])),
  fn: async () => {
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await Deno.writeFile(image, new Uint8Array(16 * MiB));
      const socket = `${root}/nbd.sock`;
      const cluster = await Cluster.start({
        root,
        image,
        agentArgs: ["--tracker", "nbd", "--nbd-listen", `unix:${socket}`],
      });
      try {
        await cluster.waitFor(
          "the first generation",
          async () => Number((await cluster.volumeStatus()).committedGeneration) >= 1,
        );
        // Paused, the writes stay pending (cut or not yet): status must count them either way.
        await cluster.control("POST", "/volumes/vm/pause");
        const uri = `nbd+unix:///vm?socket=${socket}`;
        await runTool("qemu-io", [
          "-f",
          "raw",
          "-c",
          "write -P 0x5a 1M 200k",
          "-c",
          "write -P 0xa5 9M 4k",
          uri,
        ]);
        // Blocks 16–19 (1 MiB + 200 KiB) and 144 (9 MiB), of 64 KiB.
        const status = await cluster.volumeStatus();
        const prediction = status.prediction as { blocks: number; freshSource: string };
        assert.equal(prediction.blocks, 5, JSON.stringify(status));
        assert.equal(prediction.freshSource, "tracker");
        assert.ok(Number(status.pendingBytes) > 0, JSON.stringify(status));
        const reply = await cluster.control("POST", "/volumes/vm/evacuate");
        assert.equal(reply.ok, true, JSON.stringify(reply));
        assert.equal((reply.result as { verified: boolean }).verified, true);
        await runTool("qemu-img", [
          "compare",
          "-f",
          "raw",
          "-F",
          "raw",
          image,
          `${root}/store/vm/image`,
        ]);
      } finally {
        await cluster.stop();
      }
    });
  },
});

seededTest(
  "agent --tracker nbd: a range zeroed while its generation is being sent, then SIGKILL: the " +
    "image keeps the hole and the replica converges to it",
  async (prng) => {
    if ((await needTools(["qemu-io", "nbdinfo"])).ignore) return;
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await makeImage(image, prng, 48 * MiB, 40 * MiB);
      const socket = `${root}/nbd.sock`;
      const cluster = await Cluster.start({
        root,
        image,
        wan: { up: LINK, down: LINK },
        agentArgs: ["--tracker", "nbd", "--nbd-listen", `unix:${socket}`],
      });
      try {
        await cluster.waitFor("the first generation under way", async () => {
          const status = await cluster.volumeStatus();
          const pending = Number(status.pendingBytes);
          return status.state === "sending" && pending > 0 && pending < 44 * MiB;
        });
        const uri = `nbd+unix:///vm?socket=${socket}`;
        // The VM zeroes 24 MiB of data the open cut still has to send.
        await runTool("qemu-io", ["-f", "raw", "-c", "write -z -u 8M 24M", "-c", "flush", uri]);
        const allocated = (await Deno.stat(image)).blocks! * 512;
        assert.ok(allocated <= 17 * MiB, `the image still holds ${allocated} bytes`);
        await cluster.agent.kill();
        cluster.startAgent();
        await waitConverged(cluster, image);
        const map = await runTool("nbdinfo", ["--map", uri]);
        assert.match(
          map.stdout,
          new RegExp(`^\\s*${8 * MiB}\\s+${24 * MiB}\\s+3\\s+hole,zero`, "m"),
        );
      } finally {
        await cluster.stop();
      }
    });
  },
);

Deno.test({
  name: "agent --tracker nbd started niced (as its unit does): the tracker's thread serves the " +
    "VM at nice 0, the sender stays at 10",
  // Root may lower a thread's nice value; under systemd, LimitNICE=+0 allows it.
  ignore: Deno.build.os !== "linux" || Deno.uid?.() !== 0,
  fn: async () => {
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await Deno.writeFile(image, new Uint8Array(8 * MiB));
      const cluster = await Cluster.start({
        root,
        image,
        agentArgs: ["--tracker", "nbd", "--nbd-listen", `unix:${root}/nbd.sock`],
        agentNice: 10,
      });
      try {
        await cluster.waitFor(
          "the first generation",
          async () => Number((await cluster.volumeStatus()).committedGeneration) >= 1,
        );
        const pid = cluster.agent.child.pid;
        const niceOf = (tid: string) => {
          const stat = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`);
          return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
        };
        const nice = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => niceOf(e.name));
        assert.equal(niceOf(String(pid)), 10, "the main thread (the sender) runs niced");
        // The tracker's thread, and any thread it started since (they inherit its value).
        assert.ok(nice.includes(0), `a thread at 0: ${nice}`);
        assert.ok(nice.every((n) => n === 0 || n === 10), `only 0 and 10: ${nice}`);
        assert.ok(nice.filter((n) => n === 10).length > nice.length / 2, `mostly 10: ${nice}`);
      } finally {
        await cluster.stop();
      }
    });
  },
});
