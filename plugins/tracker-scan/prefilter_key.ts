import { PREFILTER_SECRET_BYTES } from "../../agent/core/mod.ts";
import { io } from "../../agent/fs/io_error.ts";
import { toHex } from "../../agent/hex.ts";

const KEY_PATTERN = new RegExp(`^[0-9a-f]{${2 * PREFILTER_SECRET_BYTES}}$`);

/**
 * The agent's pre-filter secret, from `path` (64 hex digits, readable by its owner only).
 * On first use, or when the file does not hold a key (a crash while it was first written),
 * a new random secret is written there atomically with mode 0600 (the directory is not
 * fsynced: a secret lost to a power cut is replaced the same way). A new secret costs one
 * full BLAKE3 scan per volume (tables made under another key are not used); it never makes
 * a scan miss a change. Other failures (permissions, I/O) throw `IO`.
 *
 * The secret must not be readable by the guests whose disks are scanned: with it, a guest
 * could craft a write that keeps a block's pre-filter value.
 */
export async function loadPrefilterSecret(path: string): Promise<Uint8Array> {
  const text = await io(`read pre-filter key ${path}`, async () => {
    try {
      return (await Deno.readTextFile(path)).trim();
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
  });
  if (text !== null && KEY_PATTERN.test(text)) {
    await io(`restrict pre-filter key ${path} to its owner`, async () => {
      if (((await Deno.stat(path)).mode ?? 0) & 0o077) await Deno.chmod(path, 0o600);
    });
    return Uint8Array.from(text.match(/../g)!, (pair) => parseInt(pair, 16));
  }
  const secret = crypto.getRandomValues(new Uint8Array(PREFILTER_SECRET_BYTES));
  await io(`write pre-filter key ${path}`, async () => {
    const tmp = `${path}.tmp`;
    await Deno.remove(tmp).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
    const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      await file.write(new TextEncoder().encode(`${toHex(secret)}\n`));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.chmod(tmp, 0o600);
    await Deno.rename(tmp, path);
  });
  return secret;
}
