import assert from "node:assert/strict";
import * as C from "./nbd_constants.ts";
import {
  checkRequest,
  decodeRequest,
  encodeRequest,
  type RequestContext,
} from "./request_codec.ts";

const ctx: RequestContext = {
  sizeBytes: 1 << 20,
  readOnly: false,
  fua: true,
  structuredReplies: true,
  metaContexts: 1,
};

function verdict(type: number, offset: number, length: number, flags = 0, c = ctx) {
  const v = checkRequest(decodeRequest(encodeRequest(type, flags, 7n, offset, length)), c);
  return v.ok ? 0 : v.error;
}

Deno.test("request header round-trips", () => {
  const req = decodeRequest(encodeRequest(C.NBD_CMD_WRITE, 1, 0xdeadbeefn, 4096, 512));
  assert.deepEqual(req, {
    magicOk: true,
    flags: 1,
    type: C.NBD_CMD_WRITE,
    cookie: 0xdeadbeefn,
    offset: 4096n,
    length: 512,
  });
});

Deno.test("checkRequest returns the errors the specification prescribes", () => {
  const end = ctx.sizeBytes;
  assert.equal(verdict(C.NBD_CMD_READ, end - 512, 512), 0);
  assert.equal(verdict(C.NBD_CMD_READ, end - 511, 512), C.NBD_EINVAL);
  assert.equal(verdict(C.NBD_CMD_TRIM, end, 1), C.NBD_EINVAL);
  assert.equal(verdict(C.NBD_CMD_BLOCK_STATUS, end, 1), C.NBD_EINVAL);
  assert.equal(verdict(C.NBD_CMD_WRITE, end, 1), C.NBD_ENOSPC);
  assert.equal(verdict(C.NBD_CMD_WRITE_ZEROES, end - 1, 2), C.NBD_ENOSPC);
  assert.equal(verdict(C.NBD_CMD_READ, 0, C.MAX_PAYLOAD_BYTES + 1), C.NBD_EOVERFLOW);
  assert.equal(verdict(C.NBD_CMD_WRITE, 0, C.MAX_PAYLOAD_BYTES + 1), C.NBD_EINVAL);
  assert.equal(verdict(99, 0, 0), C.NBD_EINVAL);
  assert.equal(verdict(C.NBD_CMD_READ, 0, 1, C.NBD_CMD_FLAG_NO_HOLE), C.NBD_EINVAL);
  assert.equal(verdict(C.NBD_CMD_WRITE_ZEROES, 0, 1, C.NBD_CMD_FLAG_FAST_ZERO), C.NBD_EINVAL);
  assert.equal(verdict(C.NBD_CMD_WRITE_ZEROES, 0, 1, C.NBD_CMD_FLAG_NO_HOLE), 0);
  assert.equal(verdict(C.NBD_CMD_FLUSH, 1, 0), C.NBD_EINVAL);
  assert.equal(verdict(C.NBD_CMD_WRITE, 0, 1, 0, { ...ctx, readOnly: true }), C.NBD_EPERM);
  assert.equal(verdict(C.NBD_CMD_BLOCK_STATUS, 0, 1, 0, { ...ctx, metaContexts: 0 }), C.NBD_EINVAL);
  // An offset past 2^53 is still compared exactly.
  const huge = checkRequest(
    { ...decodeRequest(encodeRequest(C.NBD_CMD_READ, 0, 1n, 0, 1)), offset: 2n ** 63n },
    ctx,
  );
  assert.equal(huge.ok, false);
});
