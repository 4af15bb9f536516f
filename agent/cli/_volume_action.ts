import { parseCommand, required } from "./_args.ts";
import { callControl } from "./_control_client.ts";
import { ExitCode } from "./exit_codes.ts";

/** Usage text of a one-volume action on the running agent. */
export function volumeActionUsage(action: string, what: string): string {
  return `presync ${action} NAME [--control NAME|PATH] [--json]

${what} Talks to the running agent that has the volume (its control socket is in
/run/presync/agent for root), or to the one --control names.`;
}

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
  );
  console.log(values.json ? JSON.stringify({ ok: true }) : `${volume}: ${action}d`);
  return ExitCode.OK;
}
