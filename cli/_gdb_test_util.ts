/**
 * A vCPU register state for the gdb stub's tests and examples: every field distinct, in long mode
 * or in 32-bit protected mode.
 *
 * @module
 */

import type { KvmSegment } from "../kvm/mod.ts";
import type { VcpuRegisterState } from "./gdb_registers.ts";

function segment(selector: number, base: bigint, l: number): KvmSegment {
  return {
    base,
    limit: 0xffff_ffff,
    selector,
    type: 0xb,
    present: 1,
    dpl: 0,
    db: l ? 0 : 1,
    s: 1,
    l,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** A state whose every register holds a different value (`longMode`: EFER.LMA and CS.L set). */
export function sampleState({ longMode }: { longMode: boolean }): VcpuRegisterState {
  const gpr = (i: number) => 0x0123_4567_89ab_cdefn + (BigInt(i) << 40n);
  const names = [
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rsp",
    "rbp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
  ];
  const regs = Object.fromEntries(
    names.map((n, i) => [n, i === 0 ? 0x0123_4567_89ab_cdefn : gpr(i)]),
  ) as Record<
    string,
    bigint
  >;
  return {
    regs: { ...regs, rip: 0xffff_ffff_8100_1234n, rflags: 0x246n } as VcpuRegisterState["regs"],
    sregs: {
      cs: segment(0x10, 0n, longMode ? 1 : 0),
      ds: segment(0x18, 0n, 0),
      es: segment(0x18, 0n, 0),
      fs: segment(0x0, 0x7f00_1234_5000n, 0),
      gs: segment(0x0, 0xffff_8880_1f40_0000n, 0),
      ss: segment(0x18, 0n, 0),
      tr: segment(0x40, 0xfffffe0000003000n, 0),
      ldt: segment(0, 0n, 0),
      gdt: { base: 0xfffffe0000001000n, limit: 0x7f },
      idt: { base: 0xfffffe0000000000n, limit: 0xfff },
      cr0: 0x8005_0033n,
      cr2: 0x5555_1000n,
      cr3: 0x1_019d_8000n,
      cr4: 0x0075_1ef0n,
      cr8: 0x3n,
      efer: longMode ? 0xd01n : 0x0n,
      apicBase: 0xfee0_0900n,
      interruptBitmap: [0n, 0n, 0n, 0n],
    },
    fpu: {
      fpr: Uint8Array.from({ length: 128 }, (_, i) => (i * 7 + 1) & 0xff),
      fcw: 0x37f,
      fsw: 0x3800,
      ftwx: 0x80,
      lastOpcode: 0x1d9,
      lastIp: 0x1234n,
      lastDp: 0x5678n,
      xmm: Uint8Array.from({ length: 256 }, (_, i) => (i * 13 + 5) & 0xff),
      mxcsr: 0x1fa0,
    },
    kernelGsBase: 0xffff_8880_1f60_0000n,
  };
}
