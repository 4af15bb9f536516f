import { testBackendContract } from "../../fixtures/backend_contract.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { DirectoryBackend } from "./mod.ts";

testBackendContract("directory, power-cut file system", async () => {
  const fs = new PowerCutFileSystem();
  // The store's parent exists durably, as on a real machine.
  await fs.mkdir("/srv");
  await fs.syncDir("/");
  return {
    backend: new DirectoryBackend(fs, "/srv/store"),
    faults: {
      crashAfter: (ops) => fs.crashAfter(ops),
      powerCut: () => fs.powerCut(),
      get crashed() {
        return fs.crashed;
      },
      fill: () => void (fs.maxBytes = 0),
    },
  };
}, { simulatesPowerCut: true });

testBackendContract("directory, power-cut file system without fallocate", () => {
  const fs = new PowerCutFileSystem();
  fs.canAllocate = false;
  return { backend: new DirectoryBackend(fs, "/srv/store") };
});

testBackendContract("directory, real disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-dir-backend-" });
  return {
    backend: new DirectoryBackend(new DenoFileSystem(), `${dir}/store`),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
});
