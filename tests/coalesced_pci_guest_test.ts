/**
 * Coalesced CONFIG_ADDRESS writes on the PC board: a real-mode guest (tests/guests/pci_probe.S)
 * probes PCI configuration space 64 times as Linux does (4-byte write to 0xcf8, 4-byte read of
 * 0xcfc), then resets through the reset control register at 0xcf9 and halts with interrupts off.
 * QEMU's zones (0xcf8 and 0xcfa-0xcfb, split by the reset control) make every probe exit twice;
 * once the guest has used the ring, the range is registered whole and the write no longer exits.
 * The reset write is then queued too: the run must still end with the reset, which only the
 * runner's playback (its kick on one vCPU, its VM thread's pass on several) can deliver to a
 * guest that halted. Needs KVM with coalesced port writes (the nested VM where there is none).
 */
import assert from "node:assert/strict";
import { ifKvm, reportKvmSkip } from "../kvm/_testing.ts";
import { KVM_EXIT_IO } from "../kvm/ioctls.ts";
import { loadFlat } from "../machine/loader/mod.ts";
import { PcMachine, type PcMachineOptions } from "../machine/pc/pc_machine.ts";
import { assemble, guestSource } from "./guests/assemble.ts";
import { runOrGiveUp } from "./_give_up.ts";

reportKvmSkip("tests/coalesced_pci_guest_test.ts");

const RAM = 32n << 20n;
const ENTRY = 0x1000n;
const PROBES = 64;
/** A lost reset would halt the guest for good: the test's own kick gives up after this. */
const GIVE_UP_MS = 20_000;

async function probe(options: Partial<PcMachineOptions>) {
  const image = await assemble(guestSource("pci_probe.S"), { base: Number(ENTRY) });
  using pc = await PcMachine.create({
    ramSize: RAM,
    boot: loadFlat(image, { addr: ENTRY, mode: "real", ramSize: RAM }),
    ...options,
  });
  // A guest halted for good is seen rather than hanging the test: a reset that comes only with
  // the test's own kick came through it, not through the runner's playback.
  const { outcome, gaveUp } = await runOrGiveUp(pc, GIVE_UP_MS);
  const io = pc.exitCounts.reduce((sum, counts) => sum + counts[KVM_EXIT_IO], 0);
  assert.equal(gaveUp, false, "the reset came only with the test's own kick");
  return { outcome, io };
}

for (
  const [name, options] of [
    ["one vCPU", {}],
    ["-smp 2", { cpus: 2 }],
  ] as const
) {
  Deno.test(
    `${name}: a PCI probe's CONFIG_ADDRESS writes stop exiting, and a queued reset still resets`,
    ifKvm,
    async () => {
      const { outcome, io } = await probe(options);
      assert.deepEqual(outcome, { kind: "reset" });
      // 64 reads exit; of the 64 writes only those before the merge (32 playbacks: the first 32
      // reads, each played back before) do; then the POST code. The reset write is queued.
      assert.ok(io >= PROBES + 1, `${io} port exits`);
      assert.ok(io < 2 * PROBES, `${io} port exits: the 4-byte writes to 0xcf8 all exited`);
    },
  );
}
