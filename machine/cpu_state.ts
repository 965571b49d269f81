/**
 * The initial CPU state a boot loader asks for (real mode, 32-bit protected mode, 64-bit long
 * mode), turned into KVM's `kvm_sregs`/`kvm_regs`. Pure: it maps values, the caller does the ioctls.
 *
 * @module
 */

import type { KvmRegs, KvmSegment, KvmSregs } from "../kvm/mod.ts";
import type { BootPlan } from "./loader/boot_plan.ts";
import { BOOT_CODE32_SELECTOR, BOOT_CODE64_SELECTOR, BOOT_DATA_SELECTOR } from "./loader/layout.ts";

/** The CPU state of a boot plan (machine/loader). */
export type CpuPlan = BootPlan["cpu"];

const CR0_PE = 1n << 0n;
const CR0_ET = 1n << 4n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const RFLAGS_RESERVED = 1n << 1n;
/** Code segment type: execute/read, accessed. */
const TYPE_CODE = 0xb;
/** Data segment type: read/write, accessed. */
const TYPE_DATA = 0x3;

function segment(base: KvmSegment, fields: Partial<KvmSegment>): KvmSegment {
  return { ...base, present: 1, s: 1, dpl: 0, avl: 0, unusable: 0, ...fields };
}

/**
 * The special registers for `plan`, starting from the vCPU's current ones (so the LDT, TR, APIC
 * base and the rest keep their reset values).
 *
 * @example
 * ```ts ignore
 * vcpu.setSregs(sregsFor(vcpu.getSregs(), { mode: "protected32", rip: 0x100000n }));
 * ```
 */
export function sregsFor(current: KvmSregs, plan: CpuPlan): KvmSregs {
  const sregs: KvmSregs = { ...current };
  if (plan.gdt) sregs.gdt = { ...current.gdt, base: plan.gdt.base, limit: plan.gdt.limit };
  if (plan.mode === "real") {
    // Every segment equals CS (boot_plan.ts), limit 64 KiB.
    const cs = plan.cs ?? { selector: 0, base: 0n };
    const real = (s: KvmSegment, type: number) =>
      segment(s, { base: cs.base, selector: cs.selector, limit: 0xffff, type, db: 0, l: 0, g: 0 });
    sregs.cs = real(current.cs, TYPE_CODE);
    for (const name of ["ds", "es", "fs", "gs", "ss"] as const) sregs[name] = real(current[name], TYPE_DATA);
    sregs.cr0 = (current.cr0 & ~(CR0_PE | CR0_PG)) | CR0_ET;
    sregs.cr4 = 0n;
    sregs.efer = 0n;
    return sregs;
  }
  const long = plan.mode === "long64";
  // Flat 4 GiB segments whose descriptors match the GDT the loader wrote (machine/loader/layout.ts).
  sregs.cs = segment(current.cs, {
    base: 0n,
    limit: 0xffff_ffff,
    selector: plan.cs?.selector ?? (long ? BOOT_CODE64_SELECTOR : BOOT_CODE32_SELECTOR),
    type: TYPE_CODE,
    db: long ? 0 : 1,
    l: long ? 1 : 0,
    g: 1,
  });
  for (const name of ["ds", "es", "fs", "gs", "ss"] as const) {
    sregs[name] = segment(current[name], {
      base: 0n,
      limit: 0xffff_ffff,
      selector: BOOT_DATA_SELECTOR,
      type: TYPE_DATA,
      db: 1,
      l: 0,
      g: 1,
    });
  }
  sregs.cr0 = CR0_PE | CR0_ET | (long ? CR0_PG : 0n);
  sregs.cr4 = long ? CR4_PAE : 0n;
  sregs.efer = long ? EFER_LME | EFER_LMA : 0n;
  if (long) {
    if (plan.cr3 === undefined) throw new TypeError("a long-mode boot plan needs page tables (cr3)");
    sregs.cr3 = plan.cr3;
  }
  return sregs;
}

/** The general registers for `plan`, starting from the vCPU's current ones. */
export function regsFor(current: KvmRegs, plan: CpuPlan): KvmRegs {
  return {
    ...current,
    ...plan.gpr,
    rip: plan.rip,
    rsp: plan.rsp ?? current.rsp,
    rflags: (plan.rflags ?? 0n) | RFLAGS_RESERVED,
  };
}

/** A register dump in the style of QEMU's `info registers`, for crash reports and the monitor. */
export function formatRegisters(regs: KvmRegs, sregs: KvmSregs): string {
  const h = (v: bigint) => v.toString(16).padStart(16, "0");
  const seg = (name: string, s: KvmSegment) =>
    `${name.toUpperCase().padEnd(3)}=${s.selector.toString(16).padStart(4, "0")} ${h(s.base)} ${
      s.limit.toString(16).padStart(8, "0")
    } type=${s.type} dpl=${s.dpl} db=${s.db} l=${s.l} g=${s.g} p=${s.present}`;
  return [
    `RAX=${h(regs.rax)} RBX=${h(regs.rbx)} RCX=${h(regs.rcx)} RDX=${h(regs.rdx)}`,
    `RSI=${h(regs.rsi)} RDI=${h(regs.rdi)} RBP=${h(regs.rbp)} RSP=${h(regs.rsp)}`,
    `R8 =${h(regs.r8)} R9 =${h(regs.r9)} R10=${h(regs.r10)} R11=${h(regs.r11)}`,
    `R12=${h(regs.r12)} R13=${h(regs.r13)} R14=${h(regs.r14)} R15=${h(regs.r15)}`,
    `RIP=${h(regs.rip)} RFL=${regs.rflags.toString(16).padStart(8, "0")}`,
    ...(["cs", "ds", "es", "ss", "fs", "gs", "tr", "ldt"] as const).map((n) => seg(n, sregs[n])),
    `GDT=     ${h(sregs.gdt.base)} ${sregs.gdt.limit.toString(16).padStart(8, "0")}`,
    `IDT=     ${h(sregs.idt.base)} ${sregs.idt.limit.toString(16).padStart(8, "0")}`,
    `CR0=${sregs.cr0.toString(16).padStart(8, "0")} CR2=${h(sregs.cr2)} CR3=${h(sregs.cr3)} CR4=${
      sregs.cr4.toString(16).padStart(8, "0")
    }`,
    `EFER=${h(sregs.efer)} APIC_BASE=${h(sregs.apicBase)}`,
  ].join("\n");
}
