import assert from "node:assert/strict";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { loadPrefilterSecret } from "./prefilter_key.ts";

Deno.test("the pre-filter secret is made on first use, owner-only, and the same ever after", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-key-" });
  try {
    const path = `${dir}/prefilter.key`;
    const secret = await loadPrefilterSecret(path);
    assert.equal(secret.length, 32);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepStrictEqual(await loadPrefilterSecret(path), secret);
    // Loosened permissions are tightened again on load.
    await Deno.chmod(path, 0o644);
    assert.deepStrictEqual(await loadPrefilterSecret(path), secret);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.notDeepStrictEqual(await loadPrefilterSecret(`${dir}/other.key`), secret);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a pre-filter key file that holds no key (torn first write) is replaced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-key-" });
  try {
    const path = `${dir}/prefilter.key`;
    await Deno.writeTextFile(path, "0123");
    await Deno.writeTextFile(`${path}.tmp`, "left over");
    const secret = await loadPrefilterSecret(path);
    assert.equal(secret.length, 32);
    assert.match(await Deno.readTextFile(path), /^[0-9a-f]{64}\n$/);
    assert.deepStrictEqual(await loadPrefilterSecret(path), secret);
    assert.equal(await Deno.stat(`${path}.tmp`).then(() => true, () => false), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an unreadable pre-filter key is an IO error, not a new key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-key-" });
  try {
    // A directory where the file should be: reading fails for another reason than absence.
    await Deno.mkdir(`${dir}/prefilter.key`);
    await assertRejectsCode(loadPrefilterSecret(`${dir}/prefilter.key`), "IO");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
