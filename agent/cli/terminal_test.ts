import assert from "node:assert/strict";
import {
  agentArgs,
  controlFetch,
  freePort,
  PresyncProcess,
  serveArgs,
} from "../../fixtures/cluster.ts";
import { needTools } from "../../fixtures/nbd_tools.ts";
import type { Prng } from "../../fixtures/prng.ts";
import { withSeed } from "../../fixtures/prng.ts";
import { TerminalProcess } from "../../fixtures/terminal.ts";
import { until } from "../../fixtures/until.ts";
import { WanEmu } from "../../scripts/wan_emu.ts";
import { writeNewKey } from "../key_file.ts";
import { ExitCode } from "./exit_codes.ts";

const MiB = 1024 * 1024;
const IMAGE_BYTES = 32 * MiB;

/** Random 64 KiB writes all over the image until `stop` aborts. */
async function writeRandomly(prng: Prng, image: string, stop: AbortSignal): Promise<void> {
  using file = await Deno.open(image, { write: true });
  const block = new Uint8Array(64 * 1024);
  while (!stop.aborted) {
    for (let i = 0; i < 16; i++) {
      await file.seek(prng.int(IMAGE_BYTES / block.length) * block.length, Deno.SeekMode.Start);
      await file.write(prng.fill(block));
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The percentages drawn on a terminal, and the text without escape sequences. */
function screen(output: string): { text: string; percents: number[] } {
  // deno-lint-ignore no-control-regex
  const text = output.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
  return { text, percents: [...text.matchAll(/\] +(-?[\d.]+)% /g)].map((m) => Number(m[1])) };
}

function assertSane(who: string, output: string): void {
  const { text, percents } = screen(output);
  assert.doesNotMatch(text, /RangeError|Uncaught|NaN|Infinity|undefined/, `${who}:\n${text}`);
  assert.ok(percents.length > 0, `${who} drew no progress bar:\n${text}`);
  for (const p of percents) assert.ok(p >= 0 && p <= 100, `${who}: ${p}%\n${text}`);
  assert.doesNotMatch(text, /-\d[\d.]* ?(KiB|MiB|GiB|B)\b/, `${who}: a negative amount\n${text}`);
}

Deno.test({
  name:
    "on a terminal, agent and evacuate draw sane bars while writes push pending past the generation",
  ...(await needTools(["script", "stty"])),
  fn: () =>
    withSeed(async (prng) => {
      const root = await Deno.makeTempDir({ prefix: "presync-tty-" });
      const image = `${root}/source.img`;
      const stop = new AbortController();
      let writes: Promise<void> | null = null;
      let serve: PresyncProcess | null = null;
      let agent: TerminalProcess | null = null;
      let emu: WanEmu | null = null;
      try {
        await writeNewKey(`${root}/key`);
        (await Deno.create(image)).truncate(IMAGE_BYTES);
        const port = freePort();
        serve = new PresyncProcess(serveArgs(root, port, `${root}/serve.sock`));
        // A 16 Mbit/s link: the evacuation of several MiB lasts seconds on any machine, so
        // both processes redraw their bars during it (on loopback it took under one redraw).
        emu = WanEmu.start({
          target: { hostname: "127.0.0.1", port },
          up: { rateBitsPerSecond: 16e6 },
        });
        agent = new TerminalProcess(
          agentArgs(root, image, emu.addr.port, `${root}/agent.sock`, [
            "--interval",
            "1",
            "--rate",
            "8mbit",
          ]),
        );
        const context = () => `--- agent\n${agent?.output}\n--- serve\n${serve?.output}`;
        const status = async () => {
          const answer = await (await controlFetch(`${root}/agent.sock`, "GET", "/status")).json();
          return answer.volumes[0] as Record<string, number | string>;
        };
        await until("the first generation", async () => {
          return Number((await status()).committedGeneration) >= 1;
        }, { context, timeoutMs: 60_000, everyMs: 100 });
        writes = writeRandomly(prng, image, stop.signal);
        await until("pending bytes above the generation's", async () => {
          const v = await status();
          return v.state === "sending" && Number(v.pendingBytes) > Number(v.generationBytes);
        }, { context, timeoutMs: 60_000, everyMs: 100 });
        const evacuate = new TerminalProcess([
          "evacuate",
          "vm",
          "--control",
          `${root}/agent.sock`,
          "--timeout",
          "60",
        ]);
        const evacuated = await evacuate.wait();
        assert.equal(evacuated.code, ExitCode.OK, `${evacuate.output}\n${context()}`);
        assert.match(screen(evacuate.output).text, /vm: evacuated in .* verified/);
        assertSane("evacuate", evacuate.output);
        stop.abort();
        await writes;
        const stopped = await agent.stop("SIGTERM");
        assert.equal(stopped.code, ExitCode.OK, context());
        assertSane("agent", agent.output);
        assert.match(screen(agent.output).text, /generation_committed/);
      } finally {
        stop.abort();
        await writes?.catch(() => {});
        await agent?.stop("SIGKILL");
        await serve?.kill("SIGTERM");
        await emu?.close();
        await Deno.remove(root, { recursive: true });
      }
    }),
});
