import { ErrorCode, PresyncError } from "../errors.ts";
import { parseCommand, required } from "./_args.ts";
import { storeFromFlag } from "./_store.ts";
import { ExitCode } from "./exit_codes.ts";

export const ROLLBACK_USAGE =
  `presync rollback NAME GENERATION --yes --store DIR|rbd:POOL [--state DIR]

Rolls the replica of volume NAME back to an older committed generation it keeps
(serve --keep N; presync volumes lists the generations kept): an rbd store keeps generation
G as snapshot presync-gG, a directory store as undo log DIR/NAME/undo/gG. The replica becomes exactly that generation and the later
ones are deleted. Refused while a source agent is connected to the volume or an export of it runs
(stop the agent first). A rollback interrupted by a crash is finished by the next open.

The source agent's next session then sees the older committed generation.

  --yes               confirm: without it nothing changes
  --store DIR|rbd:POOL  the destination's store (as given to serve)
  --state DIR         an rbd store's local directory (as given to serve)
  --json              print the result as JSON`;

/** `presync rollback NAME GENERATION --yes`. */
export async function cmdRollback(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("rollback", args, {
    yes: { type: "boolean" },
    store: { type: "string" },
    state: { type: "string" },
    json: { type: "boolean" },
  });
  const name = required("rollback", "NAME", positionals[0]);
  const text = required("rollback", "GENERATION", positionals[1]);
  const generation = /^[0-9]{1,15}$/.test(text) ? Number(text) : NaN;
  if (!(generation >= 1)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `GENERATION must be a committed generation number (1 or more): received ${
        JSON.stringify(text)
      }`,
    );
  }
  if (!values.yes) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `rolling volume ${name} back to generation ${generation} deletes every later ` +
        `generation at this site; run again with --yes to confirm`,
    );
  }
  const store = storeFromFlag({
    store: required("rollback", "--store DIR|rbd:POOL", values.store),
    state: values.state,
  });
  await store.rollback(name, generation);
  console.log(
    values.json
      ? JSON.stringify({ volume: name, generation, rolledBack: true })
      : `rolled ${name} back to generation ${generation}`,
  );
  return ExitCode.OK;
}
