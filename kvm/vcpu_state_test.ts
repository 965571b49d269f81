import assert from "node:assert/strict";
import { ifKvm, KVM, mapRam, reportKvmSkip } from "./_testing.ts";
import { GuestMemory } from "./guest_memory.ts";
import {
  KVM_CAP_XCRS,
  KVM_CAP_XSAVE,
  KVM_CAP_XSAVE2,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
} from "./ioctls.ts";
import { Kvm } from "./kvm.ts";
import { readableMsrs, restoreVcpuState, saveVcpuState } from "./vcpu_state.ts";

reportKvmSkip("kvm/vcpu_state_test.ts");

/** IA32_SYSENTER_CS, an MSR every x86 KVM saves and lets the host write freely. */
const MSR_IA32_SYSENTER_CS = 0x174;
/** XSTATE_BV bits 0 and 1: the x87 and SSE components hold data (else XRSTOR loads their init state). */
const XSTATE_X87_SSE = 3n;

Deno.test("debug registers, XCRs and XSAVE: set then get returns what was set", ifKvm, () => {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  using vcpu = vm.createVcpu(0);
  const regs = { db: [0x1000n, 0x2000n, 0x3000n, 0x4000n], dr6: 0xffff_0ff0n, dr7: 0x400n, flags: 0n };
  vcpu.setDebugregs(regs);
  const read = vcpu.getDebugregs();
  assert.deepEqual(read.db, regs.db);
  assert.equal(read.dr7, 0x400n);
  if (vm.checkExtension(KVM_CAP_XSAVE) > 0) {
    const size = Math.max(vm.checkExtension(KVM_CAP_XSAVE2), 4096);
    const area = vcpu.getXsave(size);
    assert.equal(area.length, size);
    const view = new DataView(area.buffer);
    view.setUint32(24, 0x1f80 | 0x8000, true); // MXCSR with FTZ
    view.setBigUint64(512, view.getBigUint64(512, true) | XSTATE_X87_SSE, true); // XSTATE_BV: not in init state
    vcpu.setXsave(area);
    assert.equal(new DataView(vcpu.getXsave(size).buffer).getUint32(24, true), 0x1f80 | 0x8000);
  }
  if (vm.checkExtension(KVM_CAP_XCRS) > 0) {
    const xcrs = vcpu.getXcrs();
    assert.equal(xcrs[0].xcr, 0);
    assert.equal(xcrs[0].value & 1n, 1n); // x87 is always on in XCR0
    vcpu.setXcrs(xcrs);
    assert.deepEqual(vcpu.getXcrs(), xcrs);
  }
});

Deno.test("irqchip, PIT and kvmclock: set then get returns what was set", ifKvm, () => {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  vm.createIrqchip();
  vm.createPit2();
  const pic = vm.getIrqchip(KVM_IRQCHIP_PIC_MASTER);
  pic[2] = 0xfb; // imr: only the cascade unmasked
  vm.setIrqchip(KVM_IRQCHIP_PIC_MASTER, pic);
  assert.equal(vm.getIrqchip(KVM_IRQCHIP_PIC_MASTER)[2], 0xfb);
  const ioapic = vm.getIrqchip(KVM_IRQCHIP_IOAPIC);
  vm.setIrqchip(KVM_IRQCHIP_IOAPIC, ioapic);
  assert.deepEqual(vm.getIrqchip(KVM_IRQCHIP_IOAPIC), ioapic);
  assert.throws(() => vm.setIrqchip(KVM_IRQCHIP_IOAPIC, new Uint8Array(8)), RangeError);
  const pit = vm.getPit2();
  const channels = pit.channels.slice();
  const view = new DataView(channels.buffer);
  view.setUint32(48, 0x1234, true); // channel 2 count
  view.setUint8(48 + 13, 3); // mode 3
  vm.setPit2({ ...pit, channels });
  const after = new DataView(vm.getPit2().channels.buffer);
  assert.equal(after.getUint32(48, true), 0x1234);
  assert.equal(after.getUint8(48 + 13), 3);
  vm.setClock(5_000_000_000n);
  const clock = vm.getClock().clock;
  assert.ok(clock >= 5_000_000_000n && clock < 5_000_000_000n + 10_000_000_000n, `kvmclock ${clock}`);
});

Deno.test("saveVcpuState → restoreVcpuState on a second vCPU gives the same state", ifKvm, () => {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  vm.createIrqchip();
  using ram = new GuestMemory(0x10000);
  mapRam(vm, ram);
  using a = vm.createVcpu(0);
  using b = vm.createVcpu(1);
  const msrIndices = readableMsrs(a, kvm.msrIndexList());
  assert.ok(msrIndices.includes(MSR_IA32_SYSENTER_CS));
  const options = {
    msrIndices,
    xsaveSize: vm.checkExtension(KVM_CAP_XSAVE) > 0 ? Math.max(vm.checkExtension(KVM_CAP_XSAVE2), 4096) : 0,
    xcrs: vm.checkExtension(KVM_CAP_XCRS) > 0,
  };
  a.setRegs({ ...a.getRegs(), rax: 0x1234n, rip: 0xfff0n, rflags: 0x202n });
  a.setMsrs([{ index: MSR_IA32_SYSENTER_CS, data: 0x10n }]);
  a.setDebugregs({ db: [1n, 2n, 3n, 4n], dr6: 0xffff_0ff0n, dr7: 0x400n, flags: 0n });
  const state = saveVcpuState(a, options);
  restoreVcpuState(b, state);
  const copy = saveVcpuState(b, options);
  assert.deepEqual(copy.regs, state.regs);
  assert.deepEqual(copy.debugregs.db, state.debugregs.db);
  assert.equal(copy.msrs.find((m) => m.index === MSR_IA32_SYSENTER_CS)?.data, 0x10n);
  assert.equal(copy.mpState, state.mpState);
  assert.deepEqual(copy.sregs.cs, state.sregs.cs);
  if (state.xsave) assert.deepEqual(copy.xsave?.subarray(0, 512), state.xsave.subarray(0, 512));
});

Deno.test("readableMsrs keeps only what KVM reads (probe on the host list)", ifKvm, () => {
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  using vcpu = vm.createVcpu(0);
  const all = kvm.msrIndexList();
  const readable = readableMsrs(vcpu, all);
  assert.ok(readable.length > 0 && readable.length <= all.length);
  assert.equal(vcpu.getMsrs(readable).length, readable.length); // one call reads them all
  assert.ok(KVM.available);
});
