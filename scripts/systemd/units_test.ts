import assert from "node:assert/strict";
import { needTools } from "../../fixtures/nbd_tools.ts";
import { ExitCode } from "../../agent/cli/exit_codes.ts";

const DIR = new URL(".", import.meta.url).pathname;
const UNITS = ["presync-serve.service", "presync-agent@.service"];
const BINARY = "/usr/local/bin/presync";

/** The units, with ExecStart pointing at a stub so systemd-analyze finds an executable. */
async function stagedUnits(root: string): Promise<string[]> {
  const stub = `${root}/presync`;
  await Deno.writeTextFile(stub, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  const paths = [];
  for (const unit of UNITS) {
    const text = await Deno.readTextFile(`${DIR}/${unit}`);
    await Deno.writeTextFile(`${root}/${unit}`, text.replaceAll(BINARY, stub));
    paths.push(`${root}/${unit}`);
  }
  return paths;
}

async function analyze(args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command("systemd-analyze", { args, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}

Deno.test({
  name: "the systemd units pass systemd-analyze verify, and the README states their exposure",
  ...(await needTools(["systemd-analyze"])),
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "presync-units-" });
    try {
      const paths = await stagedUnits(root);
      const verify = await analyze(["verify", ...paths]);
      assert.equal(verify.code, 0, verify.output);
      assert.equal(verify.output.trim(), "", verify.output);
      const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
      for (const path of paths) {
        const security = await analyze(["security", "--offline=true", path]);
        const level = /Overall exposure level for \S+: ([\d.]+) (\w+)/.exec(security.output);
        assert.ok(level, security.output);
        const unit = path.slice(path.lastIndexOf("/") + 1).replace("@.", "@NAME.");
        assert.ok(
          readme.includes(`\`${unit}\` ${level[1]} ${level[2]}`),
          `README.md should state "\`${unit}\` ${level[1]} ${level[2]}"`,
        );
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("the units do not restart on a configuration error or a wrong key, and keep sockets private", async () => {
  for (const unit of UNITS) {
    const text = await Deno.readTextFile(`${DIR}/${unit}`);
    const prevent = /^RestartPreventExitStatus=(.*)$/m.exec(text)?.[1].split(/\s+/).map(Number);
    assert.deepStrictEqual(prevent, [ExitCode.USAGE, ExitCode.AUTH_FAILED], unit);
    assert.match(text, /^RuntimeDirectory=presync\/(agent|serve)$/m, unit);
    assert.match(text, /^RuntimeDirectoryMode=0700$/m, unit);
    assert.match(text, /^UMask=0077$/m, unit);
    assert.match(text, /^StateDirectory=presync\//m, unit);
    assert.doesNotMatch(text, /IOSchedulingClass=idle/, unit);
    assert.doesNotMatch(text, /^ExecStart=.*--control [\d.]+:\d+/m, unit);
  }
  const agent = await Deno.readTextFile(`${DIR}/presync-agent@.service`);
  assert.match(agent, /^ExecStart=.* --control %i /m, "one control socket per instance");
  assert.match(agent, /^RuntimeDirectoryPreserve=yes$/m, "instances share the directory");
});
