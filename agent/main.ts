/**
 * The `presync` command: one binary for every site.
 *
 *     presync sync --local SOURCE_IMAGE STORE_DIR --volume NAME
 *     presync verify --local STORE_DIR --volume NAME [--source IMAGE]
 *
 * @module
 */

import { cmdSync, SYNC_USAGE } from "./cli/cmd_sync.ts";
import { cmdVerify, VERIFY_USAGE } from "./cli/cmd_verify.ts";
import { ExitCode, exitCodeFor } from "./cli/exit_codes.ts";
import { PresyncError } from "./errors.ts";

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; usage: string }> = {
  sync: { run: cmdSync, usage: SYNC_USAGE },
  verify: { run: cmdVerify, usage: VERIFY_USAGE },
};

/** Runs the command line `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  const command = COMMANDS[name ?? ""];
  if (!command || rest.includes("--help") || rest.includes("-h")) {
    const text = command?.usage ??
      `usage: presync <command> [options]\n\ncommands: ${Object.keys(COMMANDS).join(", ")}\n` +
        `run \`presync <command> --help\` for a command's options`;
    (command || name === undefined || name === "--help" ? console.log : console.error)(text);
    return command || name === undefined || name === "--help" ? ExitCode.OK : ExitCode.USAGE;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    const code = err instanceof PresyncError ? ` [${err.code}]` : "";
    console.error(`presync ${name}: ${err instanceof Error ? err.message : err}${code}`);
    return exitCodeFor(err);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
