import { parseRate, UNLIMITED } from "../units/mod.ts";
import { parseCommand, required } from "./_args.ts";
import { connectControl } from "./_control_client.ts";
import { ExitCode } from "./exit_codes.ts";

export const MIGRATE_USAGE = `presync migrate NAME --qmp PATH [options]

Moves the running VM of volume NAME to the destination: its memory through QEMU's migration,
carried on the agent's session (no other port crosses the WAN), its disk as the final
generation cut at the switchover, while the VM is paused by the migration. Prepare the
destination first, while presync serve runs there:

  qemu-system-x86_64 ... -drive file=nbd+unix:///NAME?socket=/run/NAME.sock,format=raw \\
    -incoming unix:/run/NAME-incoming.sock
  presync export NAME --postcopy --early --writable --listen unix:/run/NAME.sock \\
    --incoming /run/NAME-incoming.sock

The export opens its socket at once; the destination QEMU's disk requests wait for the
switchover. With the volume on the VM's QMP (--volume NAME=qmp:unix:SOCKET#NODE, another
socket than --qmp) the pause costs only the dirty blocks, copied locally; on an image file
the final cut re-reads the image with the VM paused. If anything fails before QEMU completes, the source VM runs on here (resumed
with cont) and the destination QEMU, missing the end of the stream, never runs.

  --qmp PATH          the source VM's QMP socket
  --timeout SECONDS   most time for the whole migration (default 600)
  --max-bandwidth R   cap QEMU's migration rate (e.g. 50mbit; default unlimited)
  --control NAME|PATH the agent's control socket
  --json              print the report as JSON`;

/** `presync migrate NAME --qmp PATH`. */
export async function cmdMigrate(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("migrate", args, {
    qmp: { type: "string" },
    timeout: { type: "string" },
    "max-bandwidth": { type: "string" },
    control: { type: "string" },
    json: { type: "boolean" },
  });
  const name = required("migrate", "NAME", positionals[0]);
  const qmp = required("migrate", "--qmp PATH", values.qmp);
  const rate = values["max-bandwidth"] === undefined
    ? UNLIMITED
    : parseRate("--max-bandwidth", values["max-bandwidth"]);
  const body = {
    qmp: qmp.startsWith("/") ? qmp : `${Deno.cwd()}/${qmp}`,
    timeoutSeconds: values.timeout === undefined ? undefined : Number(values.timeout),
    maxBandwidthBytesPerSecond: rate === UNLIMITED ? undefined : rate,
  };
  using client = await connectControl({ role: "agent", control: values.control, volume: name });
  // As long as the migration takes: the agent bounds it by its --timeout.
  const reply = await client.call("POST", `/volumes/${encodeURIComponent(name)}/migrate`, {
    body,
    timeoutMs: null,
  });
  const report = reply.result as Record<string, number | string | boolean>;
  if (values.json) console.log(JSON.stringify(report));
  else {
    console.log(
      `${name} migrated in ${Number(report.totalSeconds).toFixed(1)} s (memory ` +
        `${
          Number(report.memorySeconds).toFixed(1)
        } s, QEMU downtime ${report.qemuDowntimeMs} ms, ` +
        `of which ${report.switchoverMs} ms for the final cut); memory ${report.memoryBytes} ` +
        `bytes (${report.memoryWireBytes} on the link), disk ${report.diskBytes} bytes; final ` +
        `generation ${report.generation}${report.verified ? ", verified" : ""}`,
    );
  }
  return ExitCode.OK;
}
