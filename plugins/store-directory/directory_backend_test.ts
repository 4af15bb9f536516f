import { type BackendFaults, testBackendContract } from "../../fixtures/backend_contract.ts";
import { PowerCutFileSystem } from "../../fixtures/power_cut_fs.ts";
import { DenoFileSystem } from "../../agent/fs/deno_file_system.ts";
import { DirectoryBackend } from "./mod.ts";

/** A store on the power-cut file system, whose faults the contract's crash cases use. */
async function onPowerCutFs(canAllocate: boolean, keep = 1) {
  const fs = new PowerCutFileSystem();
  fs.canAllocate = canAllocate;
  // The store's parent exists durably, as on a real machine.
  await fs.mkdir("/srv");
  await fs.syncDir("/");
  const faults: BackendFaults = {
    crashAfter: (ops) => fs.crashAfter(ops),
    powerCut: () => fs.powerCut(),
    get crashed() {
      return fs.crashed;
    },
    fill: () => void (fs.maxBytes = 0),
  };
  return { backend: new DirectoryBackend(fs, "/srv/store", { keep }), faults };
}

testBackendContract("directory, power-cut file system", () => onPowerCutFs(true), {
  simulatesPowerCut: true,
});

// Keeping generations adds an undo log to every commit: the commit's crash cases still hold.
testBackendContract(
  "directory keeping 3 generations, power-cut file system",
  () => onPowerCutFs(true, 3),
  {
    simulatesPowerCut: true,
  },
);

testBackendContract(
  "directory, power-cut file system without fallocate",
  () => onPowerCutFs(false),
  { simulatesPowerCut: true },
);

testBackendContract("directory, real disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "presync-dir-backend-" });
  return {
    backend: new DirectoryBackend(new DenoFileSystem(), `${dir}/store`),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
});
