import assert from "node:assert/strict";
import { main } from "../main.ts";
import { ExitCode } from "./exit_codes.ts";

/** Runs `presync` as a separate process, as an operator would. */
async function presync(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../main.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("sync --local then verify: exit 0, and 3 once the source changes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-cli-" });
  try {
    const image = `${dir}/disk.img`;
    const file = await Deno.open(image, { write: true, create: true });
    await file.truncate(1024 * 1024);
    await file.write(new Uint8Array(3000).fill(42));
    file.close();
    const sync = await presync(
      "sync",
      "--local",
      image,
      `${dir}/store`,
      "--volume",
      "disk",
      "--json",
    );
    assert.equal(sync.code, ExitCode.OK, sync.stderr);
    const [report] = JSON.parse(sync.stdout);
    assert.equal(report.generation, 1);
    assert.equal(report.blocksSent, 1);
    const ok = await presync(
      "verify",
      "--local",
      `${dir}/store`,
      "--volume",
      "disk",
      "--source",
      image,
      "--json",
    );
    assert.equal(ok.code, ExitCode.OK, ok.stdout + ok.stderr);
    const again = await Deno.open(image, { write: true });
    await again.seek(500_000, Deno.SeekMode.Start);
    await again.write(new Uint8Array([1]));
    again.close();
    const bad = await presync(
      "verify",
      "--local",
      `${dir}/store`,
      "--volume",
      "disk",
      "--source",
      image,
      "--json",
    );
    assert.equal(bad.code, ExitCode.VERIFY_MISMATCH);
    assert.deepStrictEqual(JSON.parse(bad.stdout).differsFromSource, [[7, 1]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad command lines exit 2 with a message naming the problem", async () => {
  assert.equal(await main(["nonsense"]), ExitCode.USAGE);
  assert.equal(
    await main(["sync", "--local", "/nope.img", "/tmp/s", "--volume", "../etc"]),
    ExitCode.USAGE,
  );
  assert.equal(await main(["sync", "--bogus"]), ExitCode.USAGE);
  assert.equal(
    await main(["sync", "--local", "a.img", "s", "--volume", "v", "--block-size", "3k"]),
    ExitCode.USAGE,
  );
});
