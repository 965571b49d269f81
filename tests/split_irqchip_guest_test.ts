/**
 * A split irqchip (`kernel-irqchip=split`: our PIC, PIT and IOAPIC, the LAPICs in KVM) on every
 * runner: a real-mode guest (tests/guests/pit_pic.S) takes 50 timer interrupts from the PIT through
 * the PIC's ExtINT. With one vCPU the VM thread runs it and injects between its own `KVM_RUN`s;
 * with more vCPUs, or a device with ioeventfd, vCPU 0 runs on a thread of its own and takes each
 * vector from the VM thread, which the PIT's host timer wakes. Needs KVM (the nested VM where
 * there is none). Four vCPUs on a split irqchip run in tests/snapshot_test.ts (the SMP guest).
 */
import assert from "node:assert/strict";
import { ifKvm, reportKvmSkip } from "../kvm/_testing.ts";
import { loadFlat } from "../machine/loader/mod.ts";
import { PcMachine, type PcMachineOptions } from "../machine/pc/pc_machine.ts";
import { assemble, guestSource } from "./guests/assemble.ts";
import { currentThread } from "../kvm/vcpu_kicker.ts";

reportKvmSkip("tests/split_irqchip_guest_test.ts");

const RAM = 32n << 20n;
const ENTRY = 0x1000n;
const TICKS = 50;
/** Long enough for any host to deliver 50 ticks of 1 ms; a lost interrupt would hang for good. */
const GIVE_UP_MS = 60_000;

/** Runs the guest to its exit; `threaded`: whether vCPU 0 must run on a thread of its own. */
async function runGuest(options: Partial<PcMachineOptions>, threaded: boolean): Promise<void> {
  const image = await assemble(guestSource("pit_pic.S"), { base: Number(ENTRY) });
  using pc = await PcMachine.create({
    ramSize: RAM,
    irqchip: "split",
    boot: loadFlat(image, { addr: ENTRY, mode: "real", ramSize: RAM }),
    ...options,
  });
  // The runners call onKick whenever their thread wakes (the PIT's timer wakes it every tick, and
  // the threaded runner's poll at least every 200 ms); a timer callback could not run meanwhile. The
  // clock starts at the first call: starting the vCPU threads (from source, type-checked, in the
  // nested VM) can take a minute of its own.
  let deadline = Infinity;
  const vmThread = currentThread().tid;
  const vcpu0Threads = new Set<number>();
  const onKick = () => {
    vcpu0Threads.add(pc.threadIds()[0]);
    if (deadline === Infinity) deadline = Date.now() + GIVE_UP_MS;
    if (Date.now() <= deadline) return;
    // Where it stands: the exits each vCPU took (by KVM_EXIT_* number), both PICs and the IOAPIC,
    // and vCPU 0's registers.
    const exits = pc.exitCounts.map((counts, cpu) =>
      `vCPU ${cpu}: ` + [...counts.entries()].filter(([, n]) => n > 0).map(([r, n]) => `${r}×${n}`).join(" ")
    );
    pc.stop({
      kind: "error",
      reason: `no exit after ${GIVE_UP_MS / 1000} s; exits ${exits.join("; ")}\n${pc.infoPic()}`,
      registers: pc.registers(0),
    });
  };
  assert.deepEqual(await pc.runAsync({ onKick }), { kind: "exit", status: 2 * TICKS + 1 });
  // The path the test names was the one taken: vCPU 0 on this (the VM) thread, or on another.
  assert.ok(vcpu0Threads.size > 0, "the runner never woke this thread");
  assert.equal(vcpu0Threads.has(vmThread), !threaded, `vCPU 0 ran on threads ${[...vcpu0Threads]}`);
}

Deno.test(
  "split irqchip, one vCPU on the VM thread: the PIT's interrupts arrive through the PIC",
  ifKvm,
  async () => {
    await runGuest({}, false);
  },
);

Deno.test(
  "split irqchip, -smp 2: vCPU 0 on its own thread takes the PIC's vectors from the VM thread",
  ifKvm,
  async () => {
    await runGuest({ cpus: 2 }, true);
  },
);

Deno.test(
  "split irqchip, one vCPU and an ioeventfd device: vCPU 0 runs on its own thread all the same",
  ifKvm,
  async () => {
    await runGuest(
      { pciDevices: [{ type: "virtio-rng-pci", entropy: (b) => b.fill(7), ioeventfd: true }] },
      true,
    );
  },
);
