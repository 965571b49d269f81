/**
 * A vCPU's whole architectural state as plain data, read and written in the order KVM needs —
 * what a snapshot stores per vCPU (QEMU's `kvm_arch_get_registers` / `kvm_arch_put_registers`).
 *
 * @module
 */

import { KvmError } from "./kvm_error.ts";
import type {
  CpuidEntry,
  KvmDebugregs,
  KvmFpu,
  KvmRegs,
  KvmSregs,
  MsrEntry,
  Vcpu,
  VcpuEvents,
  XcrEntry,
} from "./vcpu.ts";

/** IA32_TSC_DEADLINE: written after the LAPIC, or KVM drops it (the timer is not in deadline mode yet). */
export const MSR_IA32_TSC_DEADLINE = 0x6e0;

/** `kvm_vcpu_events.flags`: `nmi.pending` is valid. */
export const KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1;
/** `kvm_vcpu_events.flags`: `sipi_vector` is valid. */
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2;

/** Everything {@link saveVcpuState} reads. */
export interface VcpuState {
  /**
   * `KVM_GET_CPUID2`: the CPUID leaves the guest saw. A restore sets these, not the new host's, so
   * that the guest's view of its CPU does not change under it.
   */
  readonly cpuid: readonly CpuidEntry[];
  /** `KVM_GET_REGS`. */
  readonly regs: KvmRegs;
  /** `KVM_GET_SREGS`. */
  readonly sregs: KvmSregs;
  /** `KVM_GET_FPU` (also inside {@link xsave} when there is one; that one wins on restore). */
  readonly fpu: KvmFpu;
  /** `KVM_GET_XSAVE(2)`, or null where KVM has no XSAVE. */
  readonly xsave: Uint8Array | null;
  /** `KVM_GET_XCRS`, or null where KVM has none. */
  readonly xcrs: readonly XcrEntry[] | null;
  /** The saveable MSRs ({@link readableMsrs} of KVM_GET_MSR_INDEX_LIST). */
  readonly msrs: readonly MsrEntry[];
  /** `KVM_GET_LAPIC`: the 1 KiB register page. */
  readonly lapic: Uint8Array;
  /** `KVM_GET_VCPU_EVENTS`. */
  readonly events: VcpuEvents;
  /** `KVM_GET_MP_STATE`. */
  readonly mpState: number;
  /** `KVM_GET_DEBUGREGS`. */
  readonly debugregs: KvmDebugregs;
  /** `KVM_GET_TSC_KHZ`, or 0 where KVM cannot tell. */
  readonly tscKhz: number;
}

/** What {@link saveVcpuState} needs to know about the host's KVM. */
export interface VcpuStateOptions {
  /** The MSRs to save: {@link readableMsrs} of `Kvm.msrIndexList()`. */
  readonly msrIndices: readonly number[];
  /** Bytes of the XSAVE area (`KVM_CAP_XSAVE2`'s answer, at least 4096), or 0 without XSAVE. */
  readonly xsaveSize: number;
  /** Whether `KVM_GET/SET_XCRS` exist (`KVM_CAP_XCRS`). */
  readonly xcrs: boolean;
}

/**
 * The MSRs of `indices` that `vcpu` lets the host read, in order: KVM_GET_MSR_INDEX_LIST names
 * some that depend on CPUID or host features and are refused (QEMU's `kvm_get_supported_msrs`
 * filters the same way). One probe per MSR, once per machine.
 */
export function readableMsrs(vcpu: Vcpu, indices: readonly number[]): number[] {
  return indices.filter((index) => {
    try {
      vcpu.getMsrs([index]);
      return true;
    } catch (error) {
      if (error instanceof KvmError) return false;
      throw error;
    }
  });
}

/**
 * Reads every piece of `vcpu`'s state. The vCPU must be out of `KVM_RUN` (a paused machine).
 *
 * @throws {KvmError} when KVM refuses a read.
 */
export function saveVcpuState(vcpu: Vcpu, options: VcpuStateOptions): VcpuState {
  // vCPU events first: QEMU reads them before anything that could be changed by the others' reads.
  const events = vcpu.getVcpuEvents();
  return {
    cpuid: vcpu.getCpuid2(),
    regs: vcpu.getRegs(),
    sregs: vcpu.getSregs(),
    fpu: vcpu.getFpu(),
    xsave: options.xsaveSize > 0 ? vcpu.getXsave(options.xsaveSize) : null,
    xcrs: options.xcrs ? vcpu.getXcrs() : null,
    msrs: vcpu.getMsrs(options.msrIndices),
    lapic: vcpu.getLapic(),
    events,
    mpState: vcpu.getMpState(),
    debugregs: vcpu.getDebugregs(),
    tscKhz: tscKhzOf(vcpu),
  };
}

function tscKhzOf(vcpu: Vcpu): number {
  try {
    return vcpu.getTscKhz();
  } catch (error) {
    if (error instanceof KvmError) return 0;
    throw error;
  }
}

/**
 * Writes `state` into `vcpu`: its CPUID first (KVM sizes XSAVE and checks MSRs by it, and takes it
 * only before the first `KVM_RUN`), then in QEMU's `kvm_arch_put_registers` order: general registers, XSAVE
 * (or the FPU), XCRs, special registers (the APIC base decides how the LAPIC page is read), MSRs
 * but the TSC deadline, vCPU events, MP state, the LAPIC, then the TSC deadline (KVM ignores it
 * until the LAPIC timer is in deadline mode), then the debug registers. A different TSC frequency
 * is set first when the host can scale it.
 *
 * @throws {KvmError} when KVM refuses a write (code `"PARTIAL"` names the MSR it refused).
 */
export function restoreVcpuState(vcpu: Vcpu, state: VcpuState): void {
  vcpu.setCpuid2(state.cpuid);
  if (state.tscKhz > 0) {
    let current = 0;
    try {
      current = vcpu.getTscKhz();
    } catch (error) {
      if (!(error instanceof KvmError)) throw error;
    }
    if (current !== 0 && current !== state.tscKhz) vcpu.setTscKhz(state.tscKhz);
  }
  vcpu.setRegs(state.regs);
  vcpu.setFpu(state.fpu);
  if (state.xsave) vcpu.setXsave(state.xsave);
  if (state.xcrs && state.xcrs.length > 0) vcpu.setXcrs(state.xcrs);
  vcpu.setSregs(state.sregs);
  const deadline = state.msrs.filter((m) => m.index === MSR_IA32_TSC_DEADLINE);
  vcpu.setMsrs(state.msrs.filter((m) => m.index !== MSR_IA32_TSC_DEADLINE));
  // GET reports which optional members it filled; the pending NMI and SIPI vector are always state.
  vcpu.setVcpuEvents({
    ...state.events,
    flags: state.events.flags | KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR,
  });
  vcpu.setMpState(state.mpState);
  vcpu.setLapic(state.lapic);
  if (deadline.length > 0) vcpu.setMsrs(deadline);
  vcpu.setDebugregs(state.debugregs);
}
