import { formatBitRate, formatBytes } from "../units/mod.ts";
import { parseCommand } from "./_args.ts";
import { ControlClient, findControlSockets } from "./_control_client.ts";
import { formatDuration } from "./_progress.ts";
import { ExitCode } from "./exit_codes.ts";

export const STATUS_USAGE = `presync status [--control NAME|PATH] [--json]

Shows each volume of the running agents: state, committed generation, RPO, pending bytes,
goodput, RTT and the predicted evacuation time. Without --control, asks every agent whose
control socket is in the runtime directory (/run/presync/agent for root). Exit 5 when no
agent answers.`;

/** `presync status`. */
export async function cmdStatus(args: string[]): Promise<number> {
  const { values } = parseCommand("status", args, {
    control: { type: "string" },
    json: { type: "boolean" },
  });
  const sockets = findControlSockets({ role: "agent", control: values.control });
  const answers: Record<string, unknown>[] = [];
  let firstError: unknown = null;
  for (const socket of sockets) {
    try {
      using client = new ControlClient(socket, "agent");
      answers.push(await client.call("GET", "/status"));
    } catch (err) {
      firstError ??= err;
    }
  }
  // Stale sockets of killed agents are skipped when another agent answers.
  if (answers.length === 0) throw firstError;
  const volumes = answers.flatMap((a) => (a.volumes ?? []) as Record<string, unknown>[]);
  if (values.json) {
    console.log(JSON.stringify({ ...answers[0], volumes }));
    return ExitCode.OK;
  }
  for (const v of volumes) console.log(describeVolume(v));
  return ExitCode.OK;
}

/** One volume's status for people: data in bytes, link speed in bits per second. */
export function describeVolume(v: Record<string, unknown>): string {
  const number = (key: string) => v[key] === null || v[key] === undefined ? null : Number(v[key]);
  const rpo = number("rpoSeconds");
  const eta = number("predictedEvacuationSeconds");
  const goodput = number("goodputBytesPerSecond");
  const rtt = number("rttMs");
  return `${v.name}: ${v.state}, generation ${v.committedGeneration}, RPO ${
    rpo === null ? "-" : formatDuration(rpo)
  }, pending ${formatBytes(number("pendingBytes") ?? 0)}` +
    (goodput ? `, goodput ${formatBitRate(goodput)}` : "") +
    (rtt !== null ? `, RTT ${rtt} ms` : "") +
    `, evacuation ≈ ${eta === null ? "unknown (no goodput measured yet)" : formatDuration(eta)}` +
    (v.lastError ? `; last error: ${v.lastError}` : "");
}
