import { parseCommand, required } from "./_args.ts";
import { callControl, CONTROL_ANSWER_MS } from "./_control_client.ts";
import { ExitCode } from "./exit_codes.ts";

/** Usage text of a one-volume action on the running agent. */
export function volumeActionUsage(action: string, what: string): string {
  return `presync ${action} NAME [--control NAME|PATH] [--json]

${what} Talks to the running agent that has the volume (its control socket is in
/run/presync/agent for root), or to the one --control names.`;
}

/**
 * How long `resume` waits for the agent's answer: resuming a volume that could not start starts
 * it, which opens its tracker (for a QEMU disk, several QMP calls of up to 10 s each).
 */
export const RESUME_ANSWER_MS = 60_000;

/** `presync pause NAME` / `presync resume NAME`. */
export async function pauseOrResume(action: "pause" | "resume", args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(action, args, {
    control: { type: "string" },
    json: { type: "boolean" },
  });
  const volume = required(action, "NAME", positionals[0]);
  await callControl(
    { role: "agent", control: values.control, volume },
    "POST",
    `/volumes/${encodeURIComponent(volume)}/${action}`,
    action === "resume" ? RESUME_ANSWER_MS : CONTROL_ANSWER_MS,
  );
  console.log(values.json ? JSON.stringify({ ok: true }) : `${volume}: ${action}d`);
  return ExitCode.OK;
}
