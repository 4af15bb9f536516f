import assert from "node:assert/strict";
import { ErrorCode, PresyncError } from "../errors.ts";
import { asPresyncError, faultFix, isProcessFatal } from "./volume_faults.ts";

Deno.test("faults: only connection-wide faults stop the agent", () => {
  for (
    const code of [ErrorCode.AUTH_FAILED, ErrorCode.PEER_UNTRUSTED, ErrorCode.PROTOCOL_VERSION]
  ) {
    assert.equal(isProcessFatal(new PresyncError(code, "x")), true, code);
  }
  for (
    const code of [
      ErrorCode.VOLUME_MISMATCH,
      ErrorCode.VOLUME_HELD,
      ErrorCode.SOURCE_STATE_STALE,
      ErrorCode.NO_SPACE,
      ErrorCode.GENERATION_MISMATCH,
      ErrorCode.CONNECTION_LOST,
    ]
  ) {
    assert.equal(isProcessFatal(new PresyncError(code, "x")), false, code);
  }
});

Deno.test("faults: every parked volume gets a fix naming it", () => {
  assert.match(
    faultFix(new PresyncError(ErrorCode.VOLUME_HELD, "x"), "db1"),
    /stop the other agent .* `presync resume db1`/,
  );
  assert.match(faultFix(new PresyncError(ErrorCode.IO, "x"), "db1"), /`presync resume db1`/);
  const unknown = asPresyncError(new TypeError("boom"));
  assert.equal(unknown.code, ErrorCode.CONNECTION_LOST);
  assert.equal(unknown.retryable, true);
});
