import { ErrorCode, PresyncError } from "../errors.ts";
import { parseCommand, required } from "./_args.ts";
import { callControl } from "./_control_client.ts";
import { storeFromFlag } from "./_store.ts";
import { ExitCode } from "./exit_codes.ts";

export const DELETE_USAGE = `presync delete NAME --yes [--control NAME|PATH]
presync delete NAME --yes --store DIR|rbd:POOL [--state DIR]

Deletes the replica of volume NAME at the destination: its image, every committed
generation, what is being staged, and its default export overlay. Refused while a source
agent is connected to it or an export of it runs (stop those first). The first form asks
the running \`presync serve\` (its control socket, serve.sock in /run/presync/serve for
root, or the one --control names); the second works on
the store directly, and is refused while any presync process has the volume open.

To re-seed a volume (a replaced or resized source, or a replica to start over): stop the
agent, delete the replica here, remove the agent's state for the volume (its
--state DIR/NAME), and start the agent again: the next sync is a full one.

  --yes               confirm: without it nothing is deleted
  --json              print the result as JSON`;

/** `presync delete NAME --yes`. */
export async function cmdDelete(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("delete", args, {
    yes: { type: "boolean" },
    store: { type: "string" },
    state: { type: "string" },
    control: { type: "string" },
    json: { type: "boolean" },
  });
  const name = required("delete", "NAME", positionals[0]);
  if (!values.yes) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `deleting volume ${name} removes its replica and every committed generation at this ` +
        `site; run again with --yes to confirm`,
    );
  }
  if (values.store !== undefined) {
    await storeFromFlag({ store: values.store, state: values.state }).remove(name);
  } else {
    await callControl(
      { role: "serve", control: values.control },
      "POST",
      `/volumes/${encodeURIComponent(name)}/delete`,
      // Removing a large RBD image and its snapshots takes a while.
      null,
    );
  }
  console.log(values.json ? JSON.stringify({ volume: name, deleted: true }) : `deleted ${name}`);
  return ExitCode.OK;
}
