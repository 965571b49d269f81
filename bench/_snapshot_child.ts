/**
 * Child of bench/snapshot.ts: `bare` prints "running" at once (a bare Deno start); `import` after
 * loading the machine's modules (what a restore loads before it can start); `restore DIR`
 * restores the snapshot in DIR, prints "running" just before the guest's first KVM_RUN, runs it to
 * its next exit and closes it.
 *
 * @module
 */

const [mode, dir] = Deno.args;
if (mode === "bare") {
  console.log("running");
} else if (mode === "import") {
  await import("../machine/pc/pc_machine.ts"); // what a restore loads, without restoring
  console.log("running");
} else {
  const { PcMachine } = await import("../machine/pc/pc_machine.ts");
  using pc = await PcMachine.restore(dir);
  console.log("running");
  pc.run();
}
