import assert from "node:assert/strict";
import {
  Cluster,
  controlFetch,
  freePort,
  jsonLines,
  PresyncProcess,
  serveArgs,
} from "../../fixtures/cluster.ts";
import { until } from "../../fixtures/until.ts";
import { needTools } from "../../fixtures/nbd_tools.ts";
import { promtoolCheck } from "../../fixtures/promtool.ts";
import { writeNewKey } from "../key_file.ts";
import { ExitCode } from "../cli/exit_codes.ts";

async function withRoot(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "presync-ctl-e2e-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

function serve(root: string, port: number): PresyncProcess {
  return new PresyncProcess(serveArgs(root, port, `${root}/serve.sock`, ["--log-format", "json"]));
}

Deno.test("a live daemon's control socket is not taken (exit 2); after kill -9 it is replaced", async () => {
  await withRoot(async (root) => {
    await writeNewKey(`${root}/key`);
    const answers = () => controlFetch(`${root}/serve.sock`, "GET", "/status").then((r) => r.ok);
    const first = serve(root, freePort());
    try {
      await until("the first serve", answers, { context: () => first.output });
      const second = serve(root, freePort());
      const status = await second.wait();
      assert.equal(status.code, ExitCode.USAGE, second.output);
      assert.match(second.output, /ADDRESS_IN_USE/);
      assert.ok(await answers(), "the first serve still answers");
    } finally {
      await first.kill("SIGKILL");
    }
    assert.ok(Deno.lstatSync(`${root}/serve.sock`).isSocket, "kill -9 leaves the socket");
    const third = serve(root, freePort());
    try {
      await until("serve after a kill -9", answers, { context: () => third.output });
      assert.match(third.output, /stale_control_socket_replaced/);
    } finally {
      await third.kill("SIGTERM");
    }
  });
});

Deno.test({
  name: "after a sync, both daemons' /metrics pass promtool and count what moved",
  ...(await needTools(["promtool"])),
  fn: async () => {
    await withRoot(async (root) => {
      const image = `${root}/source.img`;
      await Deno.writeFile(image, new Uint8Array(2 * 1024 * 1024).fill(7));
      const cluster = await Cluster.start({
        root,
        image,
        agentArgs: ["--metrics-listen", "127.0.0.1:0"],
      });
      try {
        await cluster.waitFor(
          "the first generation",
          async () => Number((await cluster.volumeStatus()).committedGeneration) >= 1,
        );
        const listening = jsonLines(cluster.agent).find((l) => l.event === "control_listening");
        const metricsUrl = `http://${listening?.metrics}/metrics`;
        const agentText = await (await fetch(metricsUrl)).text();
        const serveText = await (await controlFetch(cluster.serveControl, "GET", "/metrics"))
          .text();
        for (const [who, text] of [["agent", agentText], ["serve", serveText]]) {
          const check = await promtoolCheck(text);
          assert.ok(check.ok, `${who}: ${check.output}\n${text}`);
          assert.match(text, /^presync_build_info\{version="[^"]+",deno="[^"]+"\} 1$/m, who);
          assert.match(
            text,
            /^presync_generations_committed_total\{volume="vm"\} [1-9]/m,
            `${who}\n${text}`,
          );
        }
        assert.match(agentText, /^presync_sent_bytes_total\{volume="vm"\} [1-9]/m);
        assert.match(agentText, /^presync_rtt_seconds\{volume="vm"\} 0\.\d+/m);
        assert.match(serveText, /^presync_received_bytes_total\{volume="vm"\} [1-9]/m);
        assert.match(serveText, /^presync_generation_commit_seconds_count\{volume="vm"\} [1-9]/m);
        const post = await fetch(metricsUrl.replace("/metrics", "/volumes/vm/evacuate"), {
          method: "POST",
        });
        assert.equal(post.status, 404, "the TCP metrics listener is read-only");
        await post.body?.cancel();
        const status = await cluster.control("GET", "/status");
        assert.equal(typeof status.version, "string");
      } finally {
        await cluster.stop();
      }
    });
  },
});
