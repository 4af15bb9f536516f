import { ErrorCode, PresyncError } from "../errors.ts";

/**
 * Runs the evacuate hook (`sh -c command`, e.g. pausing the VM) for one volume, with
 * `PRESYNC_VOLUME` and `PRESYNC_IMAGE` in its environment, its output on the agent's.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` when it exits with a non-zero code (the final
 *   cut must not be taken: the VM may still be running)
 */
export async function runEvacuateHook(
  command: string,
  volume: string,
  image: string,
): Promise<void> {
  const out = await new Deno.Command("sh", {
    args: ["-c", command],
    env: { PRESYNC_VOLUME: volume, PRESYNC_IMAGE: image },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `evacuate hook \`${command}\` failed with exit code ${out.code}; the final cut was not ` +
        `taken (check that the hook can pause the VM, then run evacuate again)`,
    );
  }
}
