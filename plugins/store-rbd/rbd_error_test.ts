import assert from "node:assert/strict";
import { ErrorCode } from "../../agent/errors.ts";
import { assertThrowsCode } from "../../fixtures/assert.ts";
import { checkBytes, checkName, MAX_NAME_BYTES } from "./_names.ts";
import { check, Errno, errnoName, rbdError } from "./rbd_error.ts";

Deno.test("a full pool or cluster becomes a retryable NO_SPACE naming the quota or the cluster", () => {
  const quota = rbdError(-Errno.EDQUOT, "write of 4096 bytes to rbd/presync-db1 at offset 0");
  assert.deepEqual([quota.code, quota.retryable], [ErrorCode.NO_SPACE, true]);
  assert.match(quota.message, /write of 4096 bytes to rbd\/presync-db1 at offset 0/);
  assert.match(quota.message, /EDQUOT.*set-quota/);
  const full = rbdError(-Errno.ENOSPC, "flush of rbd/presync-db1");
  assert.deepEqual([full.code, full.retryable], [ErrorCode.NO_SPACE, true]);
  assert.match(full.message, /ENOSPC.*cluster is full/);
});

Deno.test("a cluster that does not answer is retryable; a refused client is not", () => {
  for (const errno of [Errno.ETIMEDOUT, Errno.ETIME]) {
    const err = rbdError(-errno, "flush");
    assert.deepEqual([err.code, err.retryable], [ErrorCode.TIMEOUT, true]);
  }
  for (const errno of [Errno.ECONNREFUSED, Errno.ENOTCONN, Errno.EHOSTUNREACH, Errno.ESHUTDOWN]) {
    const err = rbdError(-errno, "connecting");
    assert.deepEqual([err.code, err.retryable], [ErrorCode.CONNECTION_LOST, true]);
  }
  for (const errno of [Errno.EACCES, Errno.EPERM]) {
    const err = rbdError(-errno, "connecting");
    assert.deepEqual([err.code, err.retryable], [ErrorCode.AUTH_FAILED, false]);
    assert.match(err.message, /keyring/);
  }
});

Deno.test("missing and existing images map to VOLUME_NOT_FOUND and VOLUME_EXISTS", () => {
  assert.equal(rbdError(-Errno.ENOENT, "opening image rbd/x").code, ErrorCode.VOLUME_NOT_FOUND);
  assert.equal(rbdError(-Errno.EEXIST, "creating image rbd/x").code, ErrorCode.VOLUME_EXISTS);
  const busy = rbdError(-Errno.ENOTEMPTY, "removing image rbd/x");
  assert.deepEqual([busy.code, busy.retryable], [ErrorCode.IO, false]);
  assert.match(busy.message, /snapshots/);
});

Deno.test("an errno without a meaning here is a fatal IO error that still names its number", () => {
  const err = rbdError(-4242, "reading");
  assert.deepEqual([err.code, err.retryable], [ErrorCode.IO, false]);
  assert.match(err.message, /errno 4242/);
  assert.equal(errnoName(-Errno.EROFS), "EROFS");
});

Deno.test("check passes results through and throws for negative ones", () => {
  assert.equal(check(65536n, "read"), 65536);
  assert.equal(check(0, "flush"), 0);
  assertThrowsCode(() => check(-Errno.EINVAL, "resize"), ErrorCode.INVALID_ARGUMENT);
});

Deno.test("names that Ceph would split or that carry control bytes are refused before C", () => {
  assert.equal(checkName("image", "presync-db1"), "presync-db1");
  assert.equal(checkName("image", "é".repeat(MAX_NAME_BYTES / 2)), "é".repeat(MAX_NAME_BYTES / 2));
  for (const bad of ["", "a/b", "a@b", "a\0b", "a\nb", "x".repeat(MAX_NAME_BYTES + 1)]) {
    assertThrowsCode(() => checkName("image", bad), ErrorCode.INVALID_ARGUMENT);
  }
  assertThrowsCode(
    () => checkName("image", "é".repeat(MAX_NAME_BYTES / 2 + 1)),
    ErrorCode.INVALID_ARGUMENT,
  );
  for (const bad of [-1, 1.5, Number.NaN, 2 ** 53]) {
    assertThrowsCode(() => checkBytes("offsetBytes", bad), ErrorCode.INVALID_ARGUMENT);
  }
});
