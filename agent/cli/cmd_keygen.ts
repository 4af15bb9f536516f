import { writeNewKey } from "../key_file.ts";
import { parseCommand, required } from "./_args.ts";
import { ExitCode } from "./exit_codes.ts";

export const KEYGEN_USAGE = `presync keygen --out FILE

Writes a new random pre-shared key (32 bytes, hex) to FILE with mode 0600. Copy the same
file to the source and destination sites; it authenticates every session.`;

/** `presync keygen`. */
export async function cmdKeygen(args: string[]): Promise<number> {
  const { values } = parseCommand("keygen", args, { out: { type: "string" } });
  const out = required("keygen", "--out FILE", values.out);
  await writeNewKey(out);
  console.log(`wrote a new key to ${out}`);
  return ExitCode.OK;
}
