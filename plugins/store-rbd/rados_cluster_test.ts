import assert from "node:assert/strict";
import { ErrorCode } from "../../agent/errors.ts";
import { assertRejectsCode } from "../../fixtures/assert.ts";
import { assertBytesEqual } from "../../fixtures/assert_bytes.ts";
import { freePort } from "../../fixtures/cluster.ts";
import { needCeph, sharedCephCluster } from "../../fixtures/ceph.ts";
import { RadosCluster } from "./rados_cluster.ts";
import { withScratchImage } from "./_test_cluster.ts";

const ceph = await needCeph();

/**
 * Fails the test when `promise` has not settled within `limitMs` (a hang), else returns it.
 * The limit is generous: it tells a bounded wait from an endless one, not a speed.
 */
async function settlesWithin<T>(promise: Promise<T>, limitMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} still pending after ${limitMs} ms`)),
      limitMs,
    );
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "connecting to a mon that is not there fails with a retryable TIMEOUT, not a hang",
  ignore: ceph.ignore,
  async fn() {
    const { confPath } = await sharedCephCluster();
    const deadHost = `[v2:127.0.0.1:${freePort()}]`;
    const err = await settlesWithin(
      assertRejectsCode(
        RadosCluster.connect({ confPath, connectTimeoutMs: 2000, config: { mon_host: deadHost } }),
        ErrorCode.TIMEOUT,
      ),
      30_000,
      "connect to a dead mon",
    );
    assert.equal(err.retryable, true);
    assert.match(err.message, new RegExp(`${deadHost.replace(/[[\]]/g, "\\$&")}.*2000 ms`));
    assert.match(err.message, /ceph -s/);
  },
});

Deno.test({
  name: "a wrong key is AUTH_FAILED; a missing config, a bad option or a missing pool say so",
  ignore: ceph.ignore,
  async fn() {
    const { confPath } = await sharedCephCluster();
    const keyring = await Deno.makeTempFile({ suffix: ".keyring" });
    try {
      await Deno.writeTextFile(
        keyring,
        "[client.admin]\n\tkey = AQBzSdVl2Vh1BhAA0jJ7ax5Lk3w9E8cXbk1nCg==\n",
      );
      const refused = await assertRejectsCode(
        RadosCluster.connect({ confPath, keyringPath: keyring }),
        ErrorCode.AUTH_FAILED,
      );
      assert.equal(refused.retryable, false);
    } finally {
      await Deno.remove(keyring);
    }
    await assertRejectsCode(
      RadosCluster.connect({ confPath: `${confPath}.missing` }),
      ErrorCode.INVALID_ARGUMENT,
    );
    await assertRejectsCode(
      RadosCluster.connect({ confPath, config: { no_such_option_anywhere: "1" } }),
      ErrorCode.INVALID_ARGUMENT,
    );
    await using cluster = await RadosCluster.connect({ confPath });
    const missing = (() => {
      try {
        cluster.openPool("presync-no-such-pool");
      } catch (err) {
        return err;
      }
    })();
    assert.ok(missing instanceof Error && /ceph osd pool create/.test(missing.message));
    assert.equal((missing as { code?: string }).code, ErrorCode.VOLUME_NOT_FOUND);
  },
});

Deno.test({
  name: "an OSD that stops answering fails I/O with a retryable TIMEOUT; data survives",
  ignore: ceph.ignore,
  fn: () =>
    withScratchImage(1 << 20, async ({ image, ceph: test, pool, name }) => {
      const before = new Uint8Array(4096).fill(5);
      await image.write(0, before);
      await image.flush();
      Deno.kill(test.osdPid, "SIGSTOP");
      try {
        const err = await settlesWithin(
          assertRejectsCode(
            (async () => {
              await image.write(8192, new Uint8Array(4096).fill(6));
              await image.flush();
            })(),
            ErrorCode.TIMEOUT,
          ),
          60_000,
          "a write to a stopped OSD",
        );
        assert.equal(err.retryable, true);
      } finally {
        Deno.kill(test.osdPid, "SIGCONT");
      }
      await image.close();
      await using again = await pool.openImage(name);
      assertBytesEqual(await again.read(0, 4096), before, "data flushed before the outage");
    }, { connect: { opTimeoutMs: 2000 } }),
});
