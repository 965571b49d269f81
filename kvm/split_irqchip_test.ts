/**
 * The split irqchip's ABI on a real KVM (`KVM_CAP_SPLIT_IRQCHIP`: LAPIC in the kernel, PIC and
 * IOAPIC the VMM's), with a real-mode guest (tests/guests/split_irqchip.S) that takes three
 * interrupts the three ways a split irqchip gives them:
 * - an 8259's ExtINT: `request_interrupt_window`, `KVM_EXIT_IRQ_WINDOW_OPEN` with
 *   `ready_for_interrupt_injection`, then `KVM_INTERRUPT` (QEMU's `kvm_arch_pre_run`);
 * - an edge MSI through `KVM_SIGNAL_MSI` (the userspace IOAPIC's edge pins, virtio's MSI-X);
 * - a level-triggered MSI whose vector one of the IOAPIC's reserved GSI routes names: its LAPIC EOI
 *   exits with `KVM_EXIT_IOAPIC_EOI` and the vector, for the IOAPIC's remote IRR.
 */
import assert from "node:assert/strict";
import { assemble, guestSource } from "../tests/guests/assemble.ts";
import { enterRealMode, ifKvm, mapRam, reportKvmSkip } from "./_testing.ts";
import { decodeExit, type VcpuExit } from "./exit.ts";
import { GuestMemory } from "./guest_memory.ts";
import { KVM_CAP_SPLIT_IRQCHIP, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE } from "./ioctls.ts";
import { Kvm } from "./kvm.ts";
import { KvmError } from "./kvm_error.ts";

reportKvmSkip("kvm/split_irqchip_test.ts");

const ENTRY = 0x1000;
const LAPIC_BASE = 0xfee0_0000;
/** Spurious-interrupt vector register; bit 8 enables the LAPIC in software. */
const APIC_SVR = 0xf0;
const APIC_SW_ENABLE = 0x100;
/** MSI data: level-triggered (bit 15), asserted (bit 14). */
const MSI_LEVEL = 0x8000 | 0x4000;

function runTo(vcpu: { run(): number; runPage: Uint8Array }): VcpuExit {
  vcpu.run();
  return decodeExit(vcpu.runPage);
}

Deno.test({
  name: "split irqchip: ExtINT through the interrupt window and KVM_INTERRUPT, MSIs, and the IOAPIC EOI exit",
  ...ifKvm,
  async fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    assert.ok(vm.checkExtension(KVM_CAP_SPLIT_IRQCHIP) > 0, "KVM_CAP_SPLIT_IRQCHIP");
    vm.enableSplitIrqchip(24);
    using ram = new GuestMemory(2n << 20n);
    mapRam(vm, ram);
    ram.bytes.set(await assemble(guestSource("split_irqchip.S"), { base: ENTRY }), ENTRY);
    const vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    const sregs = vcpu.getSregs();
    vcpu.setSregs({ ...sregs, fs: { ...sregs.fs, base: BigInt(LAPIC_BASE) } });
    const lapic = vcpu.getLapic();
    const view = new DataView(lapic.buffer, lapic.byteOffset);
    view.setUint32(APIC_SVR, view.getUint32(APIC_SVR, true) | APIC_SW_ENABLE, true);
    vcpu.setLapic(lapic);
    // The IOAPIC's pin 0 as its reserved route: vector 0x32, level-triggered, to APIC 0 (set once the
    // vCPU exists, so that KVM scans it for the vCPU's EOI exits).
    vm.setGsiRouting([{ gsi: 0, addressLo: LAPIC_BASE, addressHi: 0, data: 0x32 | MSI_LEVEL }]);

    // 1. The guest has interrupts off until its `sti`: ask for the window, then queue vector 0x30.
    // When the window exits is KVM's to choose: at the first instruction that can take an interrupt
    // (interrupt-window exiting in hardware), or only when the guest halts (kvm_pvm).
    const out = (value: number, exit = runTo(vcpu)) =>
      assert.ok(exit.kind === "io" && exit.port === 0x80 && exit.data[0] === value, JSON.stringify(exit));
    vcpu.setRequestInterruptWindow(true);
    let exit = runTo(vcpu);
    const early = exit.kind === "irqWindowOpen";
    if (!early) {
      out(0x81, exit); // the guest went on after its `sti`, and halts next
      exit = runTo(vcpu);
    }
    assert.equal(exit.kind, "irqWindowOpen");
    assert.ok(vcpu.readyForInterruptInjection);
    vcpu.interrupt(0x30);
    vcpu.setRequestInterruptWindow(false);
    out(0x30);
    if (early) out(0x81);

    // 2. An edge MSI, pending before the guest halts again.
    assert.equal(vm.signalMsi({ addressLo: LAPIC_BASE, addressHi: 0, data: 0x31 }), 1);
    out(0x31);

    // 3. A level MSI with the route's vector: the handler's EOI comes back to the VMM.
    assert.equal(vm.signalMsi({ addressLo: LAPIC_BASE, addressHi: 0, data: 0x32 | MSI_LEVEL }), 1);
    out(0x32);
    assert.deepEqual(runTo(vcpu), { kind: "ioapicEoi", vector: 0x32 });
    out(0x33);
  },
});

Deno.test({
  name: "split irqchip: KVM refuses it after a vCPU exists, and KVM_INTERRUPT a vector past 255",
  ...ifKvm,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    assert.throws(() => vm.enableSplitIrqchip(), (e) => e instanceof KvmError && e.op === "KVM_ENABLE_CAP");
    assert.throws(() => vcpu.interrupt(256), /vector 256 is not between 0 and 255/);
  },
});

Deno.test({
  name:
    "split irqchip: injectExtInt puts the vector in the vCPU's events and wakes it; with IF clear it queues it",
  ...ifKvm,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.enableSplitIrqchip(24);
    using ram = new GuestMemory(2n << 20n);
    mapRam(vm, ram);
    const vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    const regs = vcpu.getRegs();
    // Interrupts off: the vector must wait for KVM's own check at entry (KVM_INTERRUPT), not be injected.
    vcpu.setRegs({ ...regs, rflags: regs.rflags & ~0x200n });
    assert.equal(vcpu.injectExtInt(0x30), "queued");
    assert.equal(vcpu.getVcpuEvents().interrupt.injected, 0);
    // A second vCPU, interrupts on and halted: the vector is in its events at once, and it runs again.
    const other = vm.createVcpu(1);
    enterRealMode(other, ENTRY);
    const on = other.getRegs();
    other.setRegs({ ...on, rflags: on.rflags | 0x200n });
    other.setMpState(KVM_MP_STATE_HALTED);
    const nmiBefore = other.getVcpuEvents().nmi;
    assert.equal(other.injectExtInt(0x31), "events");
    const events = other.getVcpuEvents();
    assert.deepEqual([events.interrupt.injected, events.interrupt.nr, events.interrupt.soft], [1, 0x31, 0]);
    assert.deepEqual(events.nmi, nmiBefore, "nothing else written");
    assert.equal(other.getMpState(), KVM_MP_STATE_RUNNABLE);
    assert.throws(() => other.injectExtInt(256), RangeError);
  },
});
