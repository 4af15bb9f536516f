import { parseCommand } from "./_args.ts";
import { callControl, DEFAULT_AGENT_CONTROL } from "./_control_client.ts";
import { ExitCode } from "./exit_codes.ts";

export const STATUS_USAGE = `presync status [--control HOST:PORT] [--key-file FILE] [--json]

Shows each volume of the running agent (default control ${DEFAULT_AGENT_CONTROL}): state,
committed generation, RPO, pending bytes, goodput, RTT and the predicted evacuation time.`;

function human(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) value /= 1024, unit++;
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

/** `presync status`. */
export async function cmdStatus(args: string[]): Promise<number> {
  const { values } = parseCommand("status", args, {
    control: { type: "string" },
    "key-file": { type: "string" },
    json: { type: "boolean" },
  });
  const status = await callControl(values.control, values["key-file"], "GET", "/status");
  if (values.json) {
    console.log(JSON.stringify(status));
    return ExitCode.OK;
  }
  for (const v of (status.volumes ?? []) as Record<string, number | string | null>[]) {
    const rpo = v.rpoSeconds === null || v.rpoSeconds === undefined
      ? "-"
      : `${Number(v.rpoSeconds).toFixed(0)} s`;
    const eta = v.predictedEvacuationSeconds === null || v.predictedEvacuationSeconds === undefined
      ? "unknown (no goodput measured yet)"
      : `${Number(v.predictedEvacuationSeconds).toFixed(1)} s`;
    console.log(
      `${v.name}: ${v.state}, generation ${v.committedGeneration}, RPO ${rpo}, pending ` +
        `${human(Number(v.pendingBytes ?? 0))}` +
        (v.goodputBytesPerSecond !== undefined
          ? `, goodput ${human(Number(v.goodputBytesPerSecond))}/s`
          : "") +
        (v.rttMs !== null && v.rttMs !== undefined ? `, RTT ${v.rttMs} ms` : "") +
        (v.predictedEvacuationSeconds !== undefined ? `, evacuation ≈ ${eta}` : ""),
    );
  }
  return ExitCode.OK;
}
