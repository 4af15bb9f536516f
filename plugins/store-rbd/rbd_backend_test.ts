import assert from "node:assert/strict";
import { ErrorCode, type PresyncError } from "../../agent/errors.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { testBackendContract } from "../../fixtures/backend_contract.ts";
import { needCeph } from "../../fixtures/ceph.ts";
import { RBD_WRITE_WINDOW } from "./_rbd_replica_image.ts";
import { RbdBackend } from "./rbd_backend.ts";
import { testRbdBackend } from "./_test_pool.ts";

const ceph = await needCeph();

if (!ceph.ignore) testBackendContract("rbd, single-node Ceph", () => testRbdBackend());

Deno.test("the write window of a commit is the default unless given, and refused outside 1 to 1024", () => {
  const fs = new DenoFileSystem();
  const options = { spec: { pool: "replicas" }, stateDir: "/nonexistent", fs };
  assert.equal(new RbdBackend(options).writeWindow, RBD_WRITE_WINDOW);
  assert.equal(new RbdBackend({ ...options, writeWindow: 64 }).writeWindow, 64);
  for (const writeWindow of [0, 1025, 1.5]) {
    assert.throws(
      () => new RbdBackend({ ...options, writeWindow }),
      (err: PresyncError) =>
        err.code === ErrorCode.INVALID_ARGUMENT && err.message.includes(`received ${writeWindow}`),
    );
  }
});
