/**
 * KVM's own event counters from its debugfs (`/sys/kernel/debug/kvm/<name>`): sums over every vCPU
 * of every VM on the host, so a benchmark that runs one VM at a time reads them before and after a
 * run and takes the difference. They count the same things for every VMM (QEMU and this product
 * alike), which makes them the fair measure of how many exits each one's guest took.
 *
 * @module
 */

/** Where KVM keeps them. */
export const KVM_DEBUGFS = "/sys/kernel/debug/kvm";

/**
 * Mounts debugfs when KVM's folder is missing (needs root); whether the counters can be read.
 */
export function kvmCountersAvailable(): boolean {
  const present = () => {
    try {
      return Deno.statSync(KVM_DEBUGFS).isDirectory;
    } catch {
      return false;
    }
  };
  if (present()) return true;
  try {
    new Deno.Command("mount", { args: ["-t", "debugfs", "none", "/sys/kernel/debug"], stderr: "null" })
      .outputSync();
  } catch { /* no mount(8): the check below says no */ }
  return present();
}

/** The named counters now. */
export function readKvmCounters<N extends string>(names: readonly N[]): Record<N, number> {
  return Object.fromEntries(
    names.map((name) => [name, Number(Deno.readTextFileSync(`${KVM_DEBUGFS}/${name}`).trim())]),
  ) as Record<N, number>;
}
