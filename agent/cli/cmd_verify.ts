import { parseCommand, required } from "./_args.ts";
import { callControl } from "./_control_client.ts";
import { storeFromFlag } from "./_store.ts";
import { ExitCode } from "./exit_codes.ts";

export const VERIFY_USAGE = `presync verify NAME [--control NAME|PATH] [--json]
presync verify --local STORE_DIR --volume NAME [options]

The first form asks the running source agent to have the destination verify the replica
against the committed generation's Merkle root. The second form works on a local store:

Checks a replica: its image against its own block hashes, its Merkle root against --root,
and its image against --source when the source image is on this machine.

  --state DIR         local directory of an rbd: STORE (as given to serve)
  --source IMAGE      compare with this source image, block by block
  --root HEX          expected Merkle root
  --json              print the report as JSON
Exit code 3 when anything differs.`;

/** `presync verify --local …`. */
export async function cmdVerify(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("verify", args, {
    local: { type: "boolean" },
    volume: { type: "string" },
    state: { type: "string" },
    source: { type: "string" },
    control: { type: "string" },
    root: { type: "string" },
    json: { type: "boolean" },
  });
  if (!values.local) return await verifyRemote(args);
  const storeDir = required("verify", "STORE_DIR", positionals[0]);
  const volume = required("verify", "--volume NAME", values.volume);
  const replica = await storeFromFlag({ store: storeDir, state: values.state }).open(volume);
  try {
    const report = await replica.verify({ expectedRoot: values.root, sourceImage: values.source });
    const result = { volume, generation: replica.meta.committedGeneration, ...report };
    if (values.json) console.log(JSON.stringify(result));
    else {
      console.log(
        `${volume}: generation ${result.generation}, root ${report.merkleRoot}: ` +
          (report.ok ? "verified" : "MISMATCH"),
      );
      if (report.rootMatches === false) console.log(`  root differs from ${values.root}`);
      for (const [start, length] of report.damaged) {
        console.log(`  blocks ${start}..${start + length - 1} do not match the replica's hashes`);
      }
      for (const [start, length] of report.differsFromSource ?? []) {
        console.log(`  blocks ${start}..${start + length - 1} differ from the source`);
      }
    }
    return report.ok ? ExitCode.OK : ExitCode.VERIFY_MISMATCH;
  } finally {
    replica.close();
  }
}

async function verifyRemote(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand("verify", args, {
    control: { type: "string" },
    json: { type: "boolean" },
  });
  const name = required("verify", "NAME", positionals[0]);
  const reply = await callControl(
    { role: "agent", control: values.control, volume: name },
    "POST",
    `/volumes/${encodeURIComponent(name)}/verify`,
    // Reads the whole volume: as long as that takes (a daemon that dies is CONNECTION_LOST).
    null,
  );
  const result = reply.result as {
    ok: boolean;
    generation: number;
    report: Record<string, unknown>;
  };
  if (values.json) console.log(JSON.stringify({ volume: name, ...result }));
  else {
    console.log(
      `${name}: generation ${result.generation}, root ${result.report.merkleRoot}: ` +
        (result.ok ? "verified" : "MISMATCH"),
    );
  }
  return result.ok ? ExitCode.OK : ExitCode.VERIFY_MISMATCH;
}
