/**
 * A vCPU's KVM state as the gdb stub's x86-64 register file, and back, the way QEMU 7.2's gdbstub
 * reads and writes an x86-64 CPU:
 *
 * - outside 64-bit code (CS.L = 0) rax…rdi and rip read as their low 32 bits and r8…r15 as 0; a
 *   write there sets the low 32 bits of rax…rdi and rip (zero-extended) and is dropped for r8…r15;
 * - eflags, the selectors and the x87 control words are 32 bits; fs_base, gs_base, k_gs_base,
 *   cr0…cr8 and efer are 64 bits in every mode (the register file's size never changes);
 * - st0…st7 are the 80-bit x87 registers in FXSAVE order (as KVM keeps them); fstat is the status
 *   word with its TOP field; ftag, fiseg, fioff, foseg, fooff and fop read 0 (QEMU 7.2 too) and
 *   writes to them are dropped;
 * - a selector write is dropped: loading a segment needs its descriptor from the guest's tables,
 *   which a debugger does not mean to change (QEMU reloads it; gdb never writes selectors unless asked).
 *
 * @module
 */

import type { KvmFpu, KvmRegs, KvmSregs } from "../kvm/mod.ts";
import { leToBigint, type X86Registers, zeroRegisters } from "./gdb_x86.ts";

/** What one vCPU's registers are made of: KVM's register sets and MSR_KERNEL_GS_BASE. */
export interface VcpuRegisterState {
  regs: KvmRegs;
  sregs: KvmSregs;
  fpu: KvmFpu;
  kernelGsBase: bigint;
}

/** MSR_KERNEL_GS_BASE (the `swapgs` shadow), which gdb shows as k_gs_base. */
export const MSR_KERNEL_GS_BASE = 0xc000_0102;

const GPRS = [
  "rax",
  "rbx",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "rbp",
  "rsp",
  "r8",
  "r9",
  "r10",
  "r11",
  "r12",
  "r13",
  "r14",
  "r15",
] as const;
const SEGMENTS = ["cs", "ss", "ds", "es", "fs", "gs"] as const;
const LOW32 = 0xffff_ffffn;

/** Whether the vCPU runs 64-bit code (QEMU's HF_CS64_MASK: EFER.LMA and CS.L). */
function in64BitCode(sregs: KvmSregs): boolean {
  return (sregs.efer & (1n << 10n)) !== 0n && sregs.cs.l === 1;
}

/**
 * The register file gdb sees for `state`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toGdbRegisters } from "./gdb_registers.ts";
 * import { sampleState } from "./_gdb_test_util.ts";
 * const regs = toGdbRegisters(sampleState({ longMode: false }));
 * assert.equal(regs.rax, 0x89ab_cdefn); // the low half outside 64-bit code
 * assert.equal(regs.r8, 0n);
 * ```
 */
export function toGdbRegisters(state: VcpuRegisterState): X86Registers {
  const { regs, sregs, fpu } = state;
  const wide = in64BitCode(sregs);
  const out = zeroRegisters();
  GPRS.forEach((name, i) => {
    out[name] = wide ? regs[name] : i < 8 ? regs[name] & LOW32 : 0n;
  });
  out.rip = wide ? regs.rip : regs.rip & LOW32;
  out.eflags = regs.rflags & LOW32;
  for (const name of SEGMENTS) out[name] = BigInt(sregs[name].selector);
  out.fs_base = sregs.fs.base;
  out.gs_base = sregs.gs.base;
  out.k_gs_base = state.kernelGsBase;
  out.cr0 = sregs.cr0;
  out.cr2 = sregs.cr2;
  out.cr3 = sregs.cr3;
  out.cr4 = sregs.cr4;
  out.cr8 = sregs.cr8;
  out.efer = sregs.efer;
  for (let i = 0; i < 8; i++) {
    out[`st${i}` as `st${0 | 1 | 2 | 3 | 4 | 5 | 6 | 7}`] = leToBigint(fpu.fpr.subarray(16 * i, 16 * i + 10));
  }
  out.fctrl = BigInt(fpu.fcw);
  out.fstat = BigInt(fpu.fsw);
  for (let i = 0; i < 16; i++) {
    out[`xmm${i}` as "xmm0"] = leToBigint(fpu.xmm.subarray(16 * i, 16 * i + 16));
  }
  out.mxcsr = BigInt(fpu.mxcsr);
  return out;
}

/** `value` into `bytes` little-endian bytes at `into[at…]`. */
function putLe(into: Uint8Array, at: number, bytes: number, value: bigint): void {
  let v = value;
  for (let i = 0; i < bytes; i++) {
    into[at + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

/**
 * `state` with what gdb wrote in `regs` (a whole register file, as the stub sends it after reading
 * one). Returns new objects; `state` is not changed.
 */
export function fromGdbRegisters(state: VcpuRegisterState, regs: X86Registers): VcpuRegisterState {
  const wide = in64BitCode(state.sregs);
  const gpr = { ...state.regs };
  GPRS.forEach((name, i) => {
    if (wide) gpr[name] = regs[name];
    else if (i < 8) gpr[name] = regs[name] & LOW32;
  });
  gpr.rip = wide ? regs.rip : regs.rip & LOW32;
  gpr.rflags = (state.regs.rflags & ~LOW32) | (regs.eflags & LOW32);
  const sregs: KvmSregs = {
    ...state.sregs,
    fs: { ...state.sregs.fs, base: regs.fs_base },
    gs: { ...state.sregs.gs, base: regs.gs_base },
    cr0: regs.cr0,
    cr2: regs.cr2,
    cr3: regs.cr3,
    cr4: regs.cr4,
    cr8: regs.cr8,
    efer: regs.efer,
  };
  const fpr = state.fpu.fpr.slice();
  for (let i = 0; i < 8; i++) putLe(fpr, 16 * i, 10, regs[`st${i}` as "st0"]);
  const xmm = state.fpu.xmm.slice();
  for (let i = 0; i < 16; i++) putLe(xmm, 16 * i, 16, regs[`xmm${i}` as "xmm0"]);
  const fpu: KvmFpu = {
    ...state.fpu,
    fpr,
    xmm,
    fcw: Number(regs.fctrl & 0xffffn),
    fsw: Number(regs.fstat & 0xffffn),
    mxcsr: Number(regs.mxcsr & LOW32),
  };
  return { regs: gpr, sregs, fpu, kernelGsBase: regs.k_gs_base };
}
