import { ErrorCode, PresyncError } from "../../agent/errors.ts";
import { io } from "../../agent/fs/io_error.ts";

/**
 * Makes the directory QEMU and the agent share, beside the QMP socket (whose directory QEMU's
 * group may write): a real directory, never a symlink someone planted there.
 *
 * @throws {PresyncError} `INVALID_ARGUMENT` when the path is a symlink or a file, `IO` when it
 *   cannot be made or inspected
 */
export async function prepareWorkDir(dir: string): Promise<void> {
  await io(`create ${dir}`, async () => {
    try {
      await Deno.mkdir(dir);
      // QEMU writes its overlays and NBD socket here: its group (the directory's, as a
      // setgid parent gives it) must reach it whatever the agent's umask.
      await Deno.chmod(dir, 0o770);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
  });
  const info = await io(`inspect ${dir}`, () => Deno.lstat(dir));
  if (!info.isDirectory) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      `${dir} must be a directory that QEMU and presync share, but it is a ` +
        `${info.isSymlink ? "symbolic link" : "file"}: remove it, and presync makes the directory`,
    );
  }
}
