import { parseCommand, required } from "./_args.ts";
import { callControl, DEFAULT_AGENT_CONTROL } from "./_control_client.ts";
import { ExitCode } from "./exit_codes.ts";

/** Usage text of a one-volume action on the running agent. */
export function volumeActionUsage(action: string, what: string): string {
  return `presync ${action} NAME [--control HOST:PORT] [--key-file FILE] [--json]

${what} (running agent on ${DEFAULT_AGENT_CONTROL} unless --control says otherwise).`;
}

/** Runs `presync ACTION NAME` against the agent's control endpoint; returns its result. */
export async function volumeAction(
  action: "pause" | "resume" | "evacuate",
  args: string[],
): Promise<{ result: unknown; json: boolean }> {
  const { values, positionals } = parseCommand(action, args, {
    control: { type: "string" },
    "key-file": { type: "string" },
    json: { type: "boolean" },
  });
  const name = required(action, "NAME", positionals[0]);
  const reply = await callControl(
    values.control,
    values["key-file"],
    "POST",
    `/volumes/${encodeURIComponent(name)}/${action}`,
  );
  return { result: reply.result, json: values.json === true };
}

/** `presync pause NAME` / `presync resume NAME`. */
export async function pauseOrResume(action: "pause" | "resume", args: string[]): Promise<number> {
  const { json } = await volumeAction(action, args);
  console.log(json ? JSON.stringify({ ok: true }) : `${action}d`);
  return ExitCode.OK;
}
