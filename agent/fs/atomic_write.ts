import type { FileSystem } from "./file_system.ts";

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? (slash === 0 ? "/" : ".") : path.slice(0, slash);
}

/**
 * Replaces the file at `path` with `data` so that a crash at any instant leaves either the
 * old content or the new, never a mix: write a temporary file, sync it, rename it over
 * `path`, sync the directory.
 */
export async function atomicWrite(fs: FileSystem, path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  const file = await fs.open(tmp, { create: true });
  try {
    await file.truncate(0);
    await file.write(0, data);
    await file.sync();
  } finally {
    file.close();
  }
  await fs.rename(tmp, path);
  await fs.syncDir(parentOf(path));
}

/** Creates directory `path` (and parents) and makes its entry durable in its parent. */
export async function mkdirDurable(fs: FileSystem, path: string): Promise<void> {
  await fs.mkdir(path);
  await fs.syncDir(parentOf(path));
}

/** Reads a whole file, or returns null when it does not exist. */
export async function readWhole(fs: FileSystem, path: string): Promise<Uint8Array | null> {
  if (!(await fs.exists(path))) return null;
  const file = await fs.open(path);
  try {
    const data = new Uint8Array(await file.size());
    const n = await file.read(0, data);
    return data.subarray(0, n);
  } finally {
    file.close();
  }
}
