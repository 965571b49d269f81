import assert from "node:assert/strict";
import { assemble, guestSource } from "../tests/guests/assemble.ts";
import { enterRealMode, ifKvm, mapRam, reportKvmSkip } from "./_testing.ts";
import { decodeExit, type IoExit } from "./exit.ts";
import { GuestMemory } from "./guest_memory.ts";
import {
  KVM_CAP_IMMEDIATE_EXIT,
  KVM_EXIT_DEBUG,
  KVM_EXIT_HLT,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_GUESTDBG_ENABLE,
  KVM_GUESTDBG_SINGLESTEP,
  KVM_GUESTDBG_USE_HW_BP,
  KVM_GUESTDBG_USE_SW_BP,
  KVM_MP_STATE_RUNNABLE,
} from "./ioctls.ts";
import { Kvm } from "./kvm.ts";
import { hostKvm } from "./host_kvm.ts";
import { KvmError } from "./kvm_error.ts";

reportKvmSkip("kvm/vcpu_test.ts");

const RAM_SIZE = 2n << 20n;
const ENTRY = 0x1000;

/** A VM with 2 MiB of RAM at 0, `code` at ENTRY and one vCPU in flat real mode. */
function realModeMachine(code: Uint8Array) {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const ram = new GuestMemory(RAM_SIZE);
  mapRam(vm, ram);
  ram.bytes.set(code, ENTRY);
  const vcpu = vm.createVcpu(0);
  enterRealMode(vcpu, ENTRY);
  return {
    kvm,
    vm,
    ram,
    vcpu,
    [Symbol.dispose]() {
      kvm.close(); // closes the vCPU and the VM first
      ram.close();
    },
  };
}

function expectIo(reason: number, page: Uint8Array): IoExit {
  assert.equal(reason, KVM_EXIT_IO);
  const exit = decodeExit(page);
  assert.equal(exit.kind, "io");
  return exit as IoExit;
}

Deno.test({
  name: "real-mode guest: out8/16/32, in8 answered by the host, rep outsb, then hlt",
  ...ifKvm,
  async fn() {
    using m = realModeMachine(await assemble(guestSource("port_io.S"), { base: ENTRY }));
    const { vcpu } = m;
    const page = vcpu.runPage;

    let exit = expectIo(vcpu.run(), page);
    assert.deepEqual([exit.direction, exit.size, exit.port, exit.count], ["out", 1, 0x10, 1]);
    assert.deepEqual([...exit.data], [0x41]);

    exit = expectIo(vcpu.run(), page);
    assert.deepEqual([exit.direction, exit.size, exit.port, exit.count], ["out", 2, 0x10, 1]);
    assert.deepEqual([...exit.data], [0x42, 0x43]);

    exit = expectIo(vcpu.run(), page);
    assert.deepEqual([exit.direction, exit.size, exit.port], ["out", 4, 0x10]);
    assert.deepEqual([...exit.data], [0x44, 0x45, 0x46, 0x47]);

    exit = expectIo(vcpu.run(), page);
    assert.deepEqual([exit.direction, exit.size, exit.port, exit.count], ["in", 1, 0x10, 1]);
    exit.data[0] = 0x99; // the value the guest's `in` receives

    exit = expectIo(vcpu.run(), page);
    assert.deepEqual([exit.direction, exit.size, exit.port], ["out", 1, 0x11]);
    assert.deepEqual([...exit.data], [0x99]);

    // `rep outsb`: KVM may deliver the string in one exit (count 5) or several.
    let text = "";
    while (text.length < 5) {
      exit = expectIo(vcpu.run(), page);
      assert.deepEqual([exit.direction, exit.size, exit.port], ["out", 1, 0x10]);
      text += new TextDecoder().decode(exit.data);
    }
    assert.equal(text, "hello");

    assert.equal(vcpu.run(), KVM_EXIT_HLT);
    assert.deepEqual(decodeExit(page), { kind: "hlt" });
  },
});

Deno.test({
  name: "registers round-trip: regs, sregs, fpu, msrs, vcpu events, mp state, lapic",
  ...ifKvm,
  fn() {
    using m = realModeMachine(new Uint8Array([0xf4]));
    const { vcpu, vm } = m;
    const regs = vcpu.getRegs();
    vcpu.setRegs({ ...regs, rax: 0x1234_5678_9abc_def0n, r15: 0xffff_ffff_ffff_ffffn });
    const back = vcpu.getRegs();
    assert.equal(back.rax, 0x1234_5678_9abc_def0n);
    assert.equal(back.r15, 0xffff_ffff_ffff_ffffn);
    assert.equal(back.rip, BigInt(ENTRY));

    const sregs = vcpu.getSregs();
    assert.equal(sregs.cs.base, 0n);
    assert.equal(sregs.cs.selector, 0);
    vcpu.setSregs({ ...sregs, cr2: 0xdead_b000n });
    assert.equal(vcpu.getSregs().cr2, 0xdead_b000n);

    const fpu = vcpu.getFpu();
    vcpu.setFpu({ ...fpu, fcw: 0x37f, mxcsr: 0x1f80 });
    const fpuBack = vcpu.getFpu();
    assert.equal(fpuBack.fcw, 0x37f);
    assert.equal(fpuBack.xmm.length, 256);

    const IA32_SYSENTER_CS = 0x174;
    vcpu.setMsrs([{ index: IA32_SYSENTER_CS, data: 0x10n }]);
    assert.deepEqual(vcpu.getMsrs([IA32_SYSENTER_CS]), [{ index: IA32_SYSENTER_CS, data: 0x10n }]);

    const events = vcpu.getVcpuEvents();
    vcpu.setVcpuEvents(events);
    assert.equal(vcpu.getMpState(), KVM_MP_STATE_RUNNABLE);
    vcpu.setMpState(KVM_MP_STATE_RUNNABLE);

    // The LAPIC exists only with an in-kernel irqchip; here there is none.
    assert.throws(() => vcpu.getLapic(), KvmError);
    assert.ok(vm.memorySlots.has(0));
  },
});

Deno.test({
  name: "an unknown MSR is reported as PARTIAL with the refused index",
  ...ifKvm,
  fn() {
    using m = realModeMachine(new Uint8Array([0xf4]));
    const BOGUS_MSR = 0x4b56_0000 + 0x7f; // an index no x86 KVM implements
    assert.throws(() => m.vcpu.getMsrs([0x174, BOGUS_MSR]), (error: unknown) => {
      assert.ok(error instanceof KvmError);
      assert.equal(error.code, "PARTIAL");
      assert.equal(error.op, "KVM_GET_MSRS");
      assert.match(error.message, /1 of 2 MSRs.*0x4b56007f/);
      return true;
    });
  },
});

Deno.test({
  name: "immediate_exit makes run() return KVM_EXIT_INTR without entering the guest",
  ...ifKvm,
  fn() {
    using m = realModeMachine(new Uint8Array([0xf4]));
    if (m.kvm.checkExtension(KVM_CAP_IMMEDIATE_EXIT) === 0) return;
    m.vcpu.setImmediateExit(true);
    assert.equal(m.vcpu.run(), KVM_EXIT_INTR);
    assert.deepEqual(decodeExit(m.vcpu.runPage), { kind: "intr" });
    assert.equal(m.vcpu.getRegs().rip, BigInt(ENTRY));
    m.vcpu.setImmediateExit(false);
    assert.equal(m.vcpu.run(), KVM_EXIT_HLT);
  },
});

Deno.test({
  name: "a closed vCPU throws BadResource and its run page views are detached",
  ...ifKvm,
  fn() {
    using m = realModeMachine(new Uint8Array([0xf4]));
    const page = m.vcpu.runPage;
    assert.equal(page.length, m.kvm.vcpuMmapSize());
    m.vcpu.close();
    m.vcpu.close();
    assert.equal(m.vcpu.fd, -1);
    assert.equal(page.length, 0);
    assert.throws(() => m.vcpu.run(), Deno.errors.BadResource);
    assert.throws(() => m.vcpu.getRegs(), Deno.errors.BadResource);
    assert.throws(() => m.vcpu.runPage, Deno.errors.BadResource);
    // KVM keeps a vCPU until its VM is destroyed, so its id stays taken; other ids are free.
    assert.throws(() => m.vm.createVcpu(0), (e: unknown) => e instanceof KvmError && e.code === "EEXIST");
    using again = m.vm.createVcpu(1);
    assert.equal(again.id, 1);
  },
});

/** DR7 with only G0 and the always-one bit 10: an execution breakpoint at DR0 (R/W0 = LEN0 = 0). */
const DR7_G0_EXEC = 0x402n;
const DR6_BS_BIT = 1n << 14n;
const NOP = 0x90;
const INT3 = 0xcc;
const HLT = 0xf4;

Deno.test({
  name: "KVM_TRANSLATE: with paging off a linear address is its physical address",
  ...ifKvm,
  fn() {
    using m = realModeMachine(new Uint8Array([HLT]));
    const t = m.vcpu.translate(0x1234n);
    assert.equal(t.linearAddress, 0x1234n);
    assert.equal(t.valid, 1);
    assert.equal(t.physicalAddress, 0x1234n);
  },
});

/**
 * Inside the nested KVM VM the emulator's SVM does not deliver a guest's debug traps to kvm_amd (an
 * intercepted int3 reached the guest, a DR0 breakpoint never fired, and this test hung there): it
 * runs on a real KVM only, and says so (docs/gdb-stub.md).
 */
const GUEST_DEBUG_IN_EMULATOR = Deno.env.get("KVM_TS_NESTED") === "1";
/** kvm_pvm gives no debug exit either (measured: a single-step ran on to the next I/O exit). */
const GUEST_DEBUG_ON_PVM = hostKvm() === "software";
if (GUEST_DEBUG_IN_EMULATOR || GUEST_DEBUG_ON_PVM) {
  console.log(
    `kvm/vcpu_test.ts: KVM_SET_GUEST_DEBUG test skipped: ${
      GUEST_DEBUG_ON_PVM ? "kvm_pvm gives no debug exits" : "the nested VM's emulated SVM drops debug traps"
    }`,
  );
}

Deno.test({
  name: "KVM_SET_GUEST_DEBUG: single-step, an int3 intercepted, a DR0 execution breakpoint",
  ...ifKvm,
  ...(GUEST_DEBUG_IN_EMULATOR || GUEST_DEBUG_ON_PVM ? { ignore: true } : {}),
  fn() {
    using m = realModeMachine(new Uint8Array([NOP, NOP, INT3, NOP, NOP, HLT]));
    const { vcpu } = m;
    const none = [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n];

    vcpu.setGuestDebug({ control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, debugreg: none });
    assert.equal(vcpu.run(), KVM_EXIT_DEBUG);
    let exit = decodeExit(vcpu.runPage);
    assert.ok(exit.kind === "debug" && exit.exception === 1 && (exit.dr6 & DR6_BS_BIT) !== 0n);
    assert.equal(vcpu.getRegs().rip, BigInt(ENTRY + 1)); // a trap: after the first nop

    vcpu.setGuestDebug({ control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, debugreg: none });
    assert.equal(vcpu.run(), KVM_EXIT_DEBUG);
    exit = decodeExit(vcpu.runPage);
    assert.ok(exit.kind === "debug" && exit.exception === 3, JSON.stringify(exit, (_, v) => String(v)));
    assert.equal(exit.pc, BigInt(ENTRY + 2)); // the int3 itself, as a gdb stub expects
    assert.equal(vcpu.getRegs().rip, BigInt(ENTRY + 2));

    // Skip the int3 by hand, then stop on a DR0 execution breakpoint two bytes further on.
    vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(ENTRY + 3) });
    const dr = [BigInt(ENTRY + 4), 0n, 0n, 0n, 0n, 0n, 0n, DR7_G0_EXEC];
    vcpu.setGuestDebug({ control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, debugreg: dr });
    assert.equal(vcpu.run(), KVM_EXIT_DEBUG);
    exit = decodeExit(vcpu.runPage);
    assert.ok(exit.kind === "debug" && exit.exception === 1 && (exit.dr6 & 1n) !== 0n); // DR6.B0
    assert.equal(exit.pc, BigInt(ENTRY + 4));

    vcpu.setGuestDebug({ control: 0, debugreg: none }); // off: the guest runs to its hlt
    assert.equal(vcpu.run(), KVM_EXIT_HLT);
  },
});
