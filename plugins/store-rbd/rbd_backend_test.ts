import { testBackendContract } from "../../fixtures/backend_contract.ts";
import { needCeph } from "../../fixtures/ceph.ts";
import { testRbdBackend } from "./_test_pool.ts";

const ceph = await needCeph();

if (!ceph.ignore) testBackendContract("rbd, single-node Ceph", () => testRbdBackend());
