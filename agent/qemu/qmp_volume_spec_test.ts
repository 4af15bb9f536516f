import assert from "node:assert/strict";
import { ErrorCode, PresyncError } from "../errors.ts";
import { isQmpVolumeSpec, parseQmpVolumeSpec, qemuWorkDir } from "./qmp_volume_spec.ts";

function refused(text: string, why: RegExp): void {
  assert.throws(
    () => parseQmpVolumeSpec(text),
    (err: unknown) =>
      err instanceof PresyncError && err.code === ErrorCode.INVALID_ARGUMENT &&
      why.test(err.message) && err.message.includes(JSON.stringify(text)) &&
      err.message.includes("qmp:unix:PATH#NODE"),
    `refused ${text}`,
  );
}

Deno.test("qmp volume spec: socket path and node are read, a '#' in the path is kept", () => {
  assert.deepEqual(parseQmpVolumeSpec("qmp:unix:/run/presync-qemu/db1.qmp#libvirt-1-format"), {
    qmpSocket: "/run/presync-qemu/db1.qmp",
    node: "libvirt-1-format",
  });
  assert.deepEqual(parseQmpVolumeSpec("qmp:unix:/tmp/a#b/q.sock#drive0"), {
    qmpSocket: "/tmp/a#b/q.sock",
    node: "drive0",
  });
  assert.deepEqual(parseQmpVolumeSpec(`qmp:unix:/x#${"n".repeat(31)}`).node, "n".repeat(31));
  assert.equal(isQmpVolumeSpec("qmp:unix:/x#n"), true);
  assert.equal(isQmpVolumeSpec("/var/lib/libvirt/images/db1.img"), false);
});

Deno.test("qmp volume spec: malformed specs are refused saying what is wrong", () => {
  refused("/var/lib/db1.img", /starts with "qmp:"/);
  refused("qmp:tcp:127.0.0.1:4444#disk0", /only a Unix socket/);
  refused("qmp:unix:/run/db1.qmp", /node is missing/);
  refused("qmp:unix:run/db1.qmp#disk0", /must be absolute/);
  refused("qmp:unix:/run/../etc/db1.qmp#disk0", /contains '\.\.'/);
  refused("qmp:unix:/run/a\0b#disk0", /NUL/);
  refused(`qmp:unix:/${"d".repeat(107)}#disk0`, /108 bytes, more than 107/);
  refused("qmp:unix:/run/db1.qmp#", /node must be 1 to 31/);
  refused("qmp:unix:/run/db1.qmp#1disk", /starting with a letter/);
  refused("qmp:unix:/run/db1.qmp#disk 0", /node must be/);
  refused(`qmp:unix:/run/db1.qmp#${"n".repeat(32)}`, /node must be 1 to 31/);
});

Deno.test("qemu work directory: beside the QMP socket, refused when QEMU's NBD socket would not fit", () => {
  const spec = parseQmpVolumeSpec("qmp:unix:/run/presync-qemu/db1.qmp#disk0");
  assert.equal(qemuWorkDir(spec, "db1"), "/run/presync-qemu/presync-db1");
  assert.equal(qemuWorkDir(parseQmpVolumeSpec("qmp:unix:/q.sock#d"), "v"), "/presync-v");
  const deep = parseQmpVolumeSpec(`qmp:unix:/${"d".repeat(80)}/q.sock#disk0`);
  assert.throws(
    () => qemuWorkDir(deep, "a-rather-long-volume-name"),
    (err: unknown) =>
      err instanceof PresyncError && err.code === ErrorCode.INVALID_ARGUMENT &&
      /more than the 107 a Unix socket path may have/.test(err.message),
  );
});
