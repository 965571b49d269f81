/**
 * The x86 CPU state a VMM sets before a Linux guest's first instruction, as pure functions over
 * KVM's structures (the caller does the ioctls, docs/kvm-abi.md §7.4 steps 8-12):
 *
 * - {@link linuxCpuid}: KVM_GET_SUPPORTED_CPUID filtered for one vCPU (KVM_SET_CPUID2);
 * - {@link bootMsrs}: the MSRs Firecracker-style VMMs initialise (KVM_SET_MSRS);
 * - {@link bootFpu}: the x87/SSE reset state (KVM_SET_FPU);
 * - {@link lapicWithLints}: LINT0 = ExtINT, LINT1 = NMI in a KVM_GET_LAPIC page (KVM_SET_LAPIC).
 *
 * Topology: every vCPU is one core with one thread, all in one package, APIC id = vCPU index.
 *
 * @module
 */

import type { CpuidEntry, KvmFpu, MsrEntry } from "../kvm/mod.ts";

/** `kvm_cpuid_entry2.flags`: the entry applies to one `index` (subleaf) only. */
export const KVM_CPUID_FLAG_SIGNIFICANT_INDEX = 1;

/** Leaf 1: version and feature information. */
export const CPUID_LEAF_FEATURES = 0x1;
/** Leaf 4: deterministic cache parameters (Intel). */
export const CPUID_LEAF_CACHE_PARAMS = 0x4;
/** Leaf 0xB: extended topology. */
export const CPUID_LEAF_TOPOLOGY = 0xb;
/** Leaf 0x1F: V2 extended topology (newer Intel CPUs). */
export const CPUID_LEAF_TOPOLOGY_V2 = 0x1f;
/** Leaf 0x40000000: hypervisor vendor ("KVMKVMKVM\0\0\0" under KVM) and its highest leaf. */
export const CPUID_LEAF_HYPERVISOR = 0x4000_0000;
/** Leaf 0x80000008: address sizes and, on AMD, the core count (ECX). */
export const CPUID_LEAF_AMD_SIZES = 0x8000_0008;
/** Leaf 0x8000001E: AMD extended APIC id, core and node ids. */
export const CPUID_LEAF_AMD_TOPOLOGY = 0x8000_001e;

/** The most vCPUs {@link linuxCpuid} describes: leaf 0xB's count at the core level is 16 bits. */
export const LINUX_CPUID_MAX_CPUS = 0xffff;
/** Leaf 0x40000001 EAX bit 15: KVM_FEATURE_MSI_EXT_DEST_ID. */
export const KVM_FEATURE_MSI_EXT_DEST_ID_BIT = 1 << 15;

/** Leaf 1 EBX bits 31-24: initial APIC id. */
const LEAF1_EBX_APIC_ID_SHIFT = 24;
/** Leaf 1 EBX bits 23-16: logical processors per package. */
const LEAF1_EBX_LOGICAL_COUNT_SHIFT = 16;
/** Leaf 1 EBX bits 15-0 (CLFLUSH line size, brand index) are kept. */
const LEAF1_EBX_KEEP_MASK = 0xffff;
/** Leaf 1 ECX bit 13: CMPXCHG16B. */
export const CPUID_1_ECX_CX16_BIT = 1 << 13;
/** Leaf 1 ECX bit 26: XSAVE/XRSTOR and XCR0. */
export const CPUID_1_ECX_XSAVE_BIT = 1 << 26;
/** Leaf 1 ECX bit 31: running under a hypervisor. */
export const CPUID_1_ECX_HYPERVISOR_BIT = 0x8000_0000;
/** Leaf 1 EDX bit 28: HTT, leaf 1 EBX bits 23-16 are valid (more than one logical processor). */
export const CPUID_1_EDX_HTT_BIT = 1 << 28;

/** Leaf 4 EAX bits 4-0: cache type (0: no more caches). */
const LEAF4_EAX_TYPE_MASK = 0x1f;
/** Leaf 4 EAX bits 7-5: cache level. */
const LEAF4_EAX_LEVEL_SHIFT = 5;
/** Leaf 4 EAX bits 25-14: logical processors sharing this cache, less one. */
const LEAF4_EAX_SHARING_SHIFT = 14;
const LEAF4_EAX_SHARING_MAX = 0xfff;
/** Leaf 4 EAX bits 31-26: cores per package, less one. */
const LEAF4_EAX_CORES_SHIFT = 26;
const LEAF4_EAX_CORES_MAX = 0x3f;
/** Leaf 4 EAX bits 13-0 (type, level, self-initialising, fully associative) are kept. */
const LEAF4_EAX_KEEP_MASK = 0x3fff;

/** Leaf 0xB/0x1F ECX bits 15-8: level type. */
const TOPOLOGY_ECX_TYPE_SHIFT = 8;
/** Level types. */
const TOPOLOGY_LEVEL_INVALID = 0;
const TOPOLOGY_LEVEL_SMT = 1;
const TOPOLOGY_LEVEL_CORE = 2;

/** Leaf 0x80000008 ECX bits 7-0: cores per package less one (NC); bits 15-12: ApicIdSize. */
const AMD_SIZES_ECX_NC_MASK = 0xff;
const AMD_SIZES_ECX_APIC_ID_SIZE_SHIFT = 12;
const AMD_SIZES_ECX_APIC_ID_SIZE_MASK = 0xf000;

/** What {@link linuxCpuid} needs to know about the vCPU. */
export interface LinuxCpuidOptions {
  /** This vCPU's (initial, x2)APIC id: its index, 0 ≤ apicId < cpuCount. */
  apicId: number;
  /**
   * vCPUs in the guest (1–{@link LINUX_CPUID_MAX_CPUS}): one core each, one thread per core, one
   * package. Above 255 the 8-bit fields (leaf 1's APIC id and count, AMD's core count) hold what
   * fits — the low byte of the id, 255 — and leaf 0xB/0x1F and 0x8000001E the whole id.
   */
  cpuCount: number;
  /**
   * Offer `KVM_FEATURE_MSI_EXT_DEST_ID` (leaf 0x40000001 EAX bit 15): the guest may put APIC ids up
   * to 32767 in MSIs and IOAPIC entries (destination bits 14:8 in address bits 11:5), which the VMM
   * must translate for KVM (`Vm.enableX2apicApi`). Linux then brings up vCPUs with APIC ids above 255
   * without interrupt remapping. QEMU offers it with its own IOAPIC (`kernel-irqchip=split`).
   */
  msiExtDestId?: boolean;
  /**
   * Keep XSAVE (leaf 1 ECX bit 26). Default true. Pass false on an emulating host (docs/kvm-abi.md §8:
   * KVM's emulator cannot run `xrstor64`); it has the effect of the `noxsave` command-line option,
   * and Linux drops what depends on XSAVE (AVX and up) by itself (arch/x86/kernel/cpu/cpuid-deps.c).
   */
  xsave?: boolean;
}

function checkCount(value: number, min: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`linuxCpuid: ${what} ${value} is not an integer in [${min}, ${max}]`);
  }
}

/** Bits needed to number `n` things: ceil(log2(n)). */
function bitsFor(n: number): number {
  let bits = 0;
  while (1 << bits < n) bits++;
  return bits;
}

function isAmd(entries: readonly CpuidEntry[]): boolean {
  const leaf0 = entries.find((e) => e.function === 0);
  if (leaf0 === undefined) return false;
  const vendor = [leaf0.ebx, leaf0.edx, leaf0.ecx].map((r) =>
    String.fromCharCode(r & 0xff, (r >>> 8) & 0xff, (r >>> 16) & 0xff, r >>> 24)
  ).join("");
  return vendor === "AuthenticAMD" || vendor === "HygonGenuine";
}

/** Leaf 0xB / 0x1F for this vCPU: subleaf 0 the thread level, 1 the core level, 2 the end. */
function topologyLeaf(fn: number, apicId: number, cpuCount: number): CpuidEntry[] {
  const entry = (index: number, eax: number, ebx: number, type: number): CpuidEntry => ({
    function: fn,
    index,
    flags: KVM_CPUID_FLAG_SIGNIFICANT_INDEX,
    eax,
    ebx,
    ecx: ((type << TOPOLOGY_ECX_TYPE_SHIFT) | index) >>> 0,
    edx: apicId,
  });
  return [
    // One thread per core: shift 0 to reach the core id, 1 logical processor at this level.
    entry(0, 0, 1, TOPOLOGY_LEVEL_SMT),
    // Shift the x2APIC id right by this many bits to get the package id (always 0 here).
    entry(1, bitsFor(cpuCount), cpuCount, TOPOLOGY_LEVEL_CORE),
    entry(2, 0, 0, TOPOLOGY_LEVEL_INVALID),
  ];
}

/**
 * The CPUID table for one vCPU of a Linux guest, from KVM_GET_SUPPORTED_CPUID's entries (not
 * modified; copies are returned, in the same order):
 *
 * - leaf 1: EBX[31:24] = `apicId`'s low byte, EBX[23:16] = `cpuCount` (255 at most); EDX.HTT set iff `cpuCount` > 1 (as
 *   QEMU and Firecracker); ECX.HYPERVISOR set; ECX.CX16 cleared; ECX.XSAVE cleared when
 *   `xsave` is false;
 * - leaf 4 (Intel caches): EAX[31:26] = `cpuCount` - 1 cores per package; EAX[25:14] = 0 threads
 *   sharing L1/L2 besides this one (they are per core), `cpuCount` - 1 for L3 and beyond;
 * - leaves 0xB and 0x1F (when KVM lists them): replaced by subleaf 0 = SMT level (1 thread),
 *   subleaf 1 = core level (`cpuCount` processors, package shift ceil(log2(cpuCount))), subleaf 2 =
 *   invalid, each with EDX = `apicId`;
 * - on AMD (and Hygon): leaf 0x80000008 ECX NC = `cpuCount` - 1 (255 at most) and ApicIdSize; leaf
 *   0x8000001E EAX = `apicId`, EBX = core id `apicId` with one thread per core, ECX = node 0 of 1;
 * - leaf 0x40000001 EAX: `KVM_FEATURE_MSI_EXT_DEST_ID` added with `msiExtDestId`;
 * - everything else, including KVM's leaves at 0x40000000 ("KVMKVMKVM", kvm-clock features), kept.
 *
 * Why CX16 goes: on this platform (docs/kvm-abi.md §8, kvm_pvm) guest code at CPL0 is emulated one
 * instruction at a time, and KVM's emulator cannot execute `lock cmpxchg16b`; Linux 6.1 stopped with
 * an emulation failure there. Without CX16 in CPUID, Linux takes its non-CX16 paths (x86-64 Linux
 * does not require it). It costs nothing measurable on hardware virtualization.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { linuxCpuid } from "./x86_cpu.ts";
 * const [leaf1] = linuxCpuid(
 *   [{ function: 1, index: 0, flags: 0, eax: 0x00a00f11, ebx: 0x0800, ecx: 0x2000, edx: 0 }],
 *   { apicId: 1, cpuCount: 2 },
 * );
 * assert.ok(leaf1.ebx === 0x0102_0800 && leaf1.ecx === 0x8000_0000);
 * ```
 */
export function linuxCpuid(supported: readonly CpuidEntry[], options: LinuxCpuidOptions): CpuidEntry[] {
  const { apicId, cpuCount } = options;
  checkCount(cpuCount, 1, LINUX_CPUID_MAX_CPUS, "cpuCount");
  checkCount(apicId, 0, cpuCount - 1, "apicId");
  const amd = isAmd(supported);
  const out: CpuidEntry[] = [];
  const replaced = new Set<number>();
  for (const original of supported) {
    const e = { ...original };
    switch (e.function) {
      case CPUID_LEAF_FEATURES: {
        e.ebx = (((apicId & 0xff) << LEAF1_EBX_APIC_ID_SHIFT) |
          (Math.min(cpuCount, 0xff) << LEAF1_EBX_LOGICAL_COUNT_SHIFT) | (e.ebx & LEAF1_EBX_KEEP_MASK)) >>> 0;
        let clear = CPUID_1_ECX_CX16_BIT;
        if (options.xsave === false) clear |= CPUID_1_ECX_XSAVE_BIT;
        e.ecx = ((e.ecx | CPUID_1_ECX_HYPERVISOR_BIT) & ~clear) >>> 0;
        e.edx = (cpuCount > 1 ? e.edx | CPUID_1_EDX_HTT_BIT : e.edx & ~CPUID_1_EDX_HTT_BIT) >>> 0;
        break;
      }
      case CPUID_LEAF_CACHE_PARAMS: {
        if ((e.eax & LEAF4_EAX_TYPE_MASK) === 0) break; // the terminating "no more caches" subleaf
        const level = (e.eax >>> LEAF4_EAX_LEVEL_SHIFT) & 0x7;
        const sharing = level >= 3 ? Math.min(cpuCount - 1, LEAF4_EAX_SHARING_MAX) : 0;
        const cores = Math.min(cpuCount - 1, LEAF4_EAX_CORES_MAX);
        e.eax = ((cores << LEAF4_EAX_CORES_SHIFT) | (sharing << LEAF4_EAX_SHARING_SHIFT) |
          (e.eax & LEAF4_EAX_KEEP_MASK)) >>> 0;
        break;
      }
      case CPUID_LEAF_TOPOLOGY:
      case CPUID_LEAF_TOPOLOGY_V2: {
        // All subleaves are replaced by the three of topologyLeaf, at the first one's position.
        if (!replaced.has(e.function)) out.push(...topologyLeaf(e.function, apicId, cpuCount));
        replaced.add(e.function);
        continue;
      }
      case CPUID_LEAF_AMD_SIZES:
        if (amd) {
          e.ecx = ((e.ecx & ~(AMD_SIZES_ECX_NC_MASK | AMD_SIZES_ECX_APIC_ID_SIZE_MASK)) |
            Math.min(cpuCount - 1, AMD_SIZES_ECX_NC_MASK) |
            (bitsFor(cpuCount) << AMD_SIZES_ECX_APIC_ID_SIZE_SHIFT)) >>> 0;
        }
        break;
      case CPUID_LEAF_AMD_TOPOLOGY:
        if (amd) {
          e.eax = apicId; // extended APIC id
          e.ebx = apicId & 0xff; // core id; bits 15-8: threads per core less one = 0
          e.ecx = 0; // node 0; bits 10-8: nodes per processor less one = 0
          e.edx = 0;
        }
        break;
      case CPUID_LEAF_KVM_FEATURES:
        if (options.msiExtDestId) e.eax = (e.eax | KVM_FEATURE_MSI_EXT_DEST_ID_BIT) >>> 0;
        break;
    }
    out.push(e);
  }
  return out;
}

/** IA32_TIME_STAMP_COUNTER. */
export const MSR_IA32_TSC = 0x10;
/** IA32_SYSENTER_CS. */
export const MSR_IA32_SYSENTER_CS = 0x174;
/** IA32_SYSENTER_ESP. */
export const MSR_IA32_SYSENTER_ESP = 0x175;
/** IA32_SYSENTER_EIP. */
export const MSR_IA32_SYSENTER_EIP = 0x176;
/** IA32_MISC_ENABLE. */
export const MSR_IA32_MISC_ENABLE = 0x1a0;
/** IA32_MTRR_DEF_TYPE. */
export const MSR_MTRR_DEF_TYPE = 0x2ff;
/** STAR: SYSCALL/SYSRET segment selectors. */
export const MSR_STAR = 0xc000_0081;
/** LSTAR: 64-bit SYSCALL target. */
export const MSR_LSTAR = 0xc000_0082;
/** CSTAR: compatibility-mode SYSCALL target. */
export const MSR_CSTAR = 0xc000_0083;
/** SYSCALL_MASK (FMASK): RFLAGS bits cleared on SYSCALL. */
export const MSR_SYSCALL_MASK = 0xc000_0084;
/** KERNEL_GS_BASE: the GS base SWAPGS exchanges. */
export const MSR_KERNEL_GS_BASE = 0xc000_0102;

/** IA32_MISC_ENABLE bit 0: fast-string operations (`rep movs`/`stos`) enabled. */
export const MISC_ENABLE_FAST_STRING_BIT = 1n << 0n;
/** IA32_MTRR_DEF_TYPE bit 11: MTRRs enabled. */
export const MTRR_ENABLE_BIT = 1n << 11n;
/** Memory type write-back (default type of memory no MTRR covers). */
export const MTRR_MEM_TYPE_WB = 0x6n;

/**
 * The MSRs to set before a Linux guest starts (Firecracker's `create_boot_msr_entries`): the
 * SYSENTER and SYSCALL MSRs and KERNEL_GS_BASE zeroed (Linux programs them), TSC = 0,
 * IA32_MISC_ENABLE = fast strings, IA32_MTRR_DEF_TYPE = MTRRs on, default write-back. After
 * KVM_SET_MSRS, check that it set all of them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bootMsrs, MSR_MTRR_DEF_TYPE } from "./x86_cpu.ts";
 * assert.ok(bootMsrs().find((m) => m.index === MSR_MTRR_DEF_TYPE)?.data === 0x806n);
 * ```
 */
export function bootMsrs(): MsrEntry[] {
  return [
    { index: MSR_IA32_SYSENTER_CS, data: 0n },
    { index: MSR_IA32_SYSENTER_ESP, data: 0n },
    { index: MSR_IA32_SYSENTER_EIP, data: 0n },
    { index: MSR_STAR, data: 0n },
    { index: MSR_CSTAR, data: 0n },
    { index: MSR_KERNEL_GS_BASE, data: 0n },
    { index: MSR_SYSCALL_MASK, data: 0n },
    { index: MSR_LSTAR, data: 0n },
    { index: MSR_IA32_TSC, data: 0n },
    { index: MSR_IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING_BIT },
    { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE_BIT | MTRR_MEM_TYPE_WB },
  ];
}

/** x87 control word at reset (FNINIT): all exceptions masked, 64-bit precision, round to nearest. */
export const FPU_FCW_DEFAULT = 0x37f;
/** MXCSR at reset: all SSE exceptions masked, round to nearest. */
export const FPU_MXCSR_DEFAULT = 0x1f80;

/**
 * The x87/SSE state for KVM_SET_FPU: FCW 0x37F, MXCSR 0x1F80, everything else zero (what FNINIT
 * and a reset leave; Firecracker sets the same).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bootFpu } from "./x86_cpu.ts";
 * assert.ok(bootFpu().fcw === 0x37f && bootFpu().mxcsr === 0x1f80);
 * ```
 */
export function bootFpu(): KvmFpu {
  return {
    fpr: new Uint8Array(128),
    fcw: FPU_FCW_DEFAULT,
    fsw: 0,
    ftwx: 0,
    lastOpcode: 0,
    lastIp: 0n,
    lastDp: 0n,
    xmm: new Uint8Array(256),
    mxcsr: FPU_MXCSR_DEFAULT,
  };
}

/** Offset of LVT LINT0 in the local APIC register page. */
export const APIC_LVT_LINT0 = 0x350;
/** Offset of LVT LINT1. */
export const APIC_LVT_LINT1 = 0x360;
/** LVT bits 10-8: delivery mode. */
export const APIC_LVT_DELIVERY_MODE_MASK = 0x700;
const APIC_LVT_DELIVERY_MODE_SHIFT = 8;
/** Delivery mode NMI. */
export const APIC_MODE_NMI = 0b100;
/** Delivery mode ExtINT: the interrupt comes from the 8259 PIC. */
export const APIC_MODE_EXTINT = 0b111;

/**
 * A copy of a KVM_GET_LAPIC register page with LINT0 delivering ExtINT (the PIC's interrupts) and
 * LINT1 NMI, as an MP BIOS leaves them (Firecracker's `set_lint`). Only the delivery-mode bits
 * change; the mask and other bits are kept. Throws `RangeError` for a page too short to hold them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lapicWithLints } from "./x86_cpu.ts";
 * const lapic = lapicWithLints(new Uint8Array(1024));
 * assert.equal(new DataView(lapic.buffer).getUint32(0x350, true), 0x700);
 * ```
 */
export function lapicWithLints(lapic: Uint8Array): Uint8Array {
  if (lapic.length < APIC_LVT_LINT1 + 4) {
    throw new RangeError(`lapicWithLints: the APIC page is ${lapic.length} bytes; LVT LINT1 ends at 0x364`);
  }
  const copy = lapic.slice();
  const view = new DataView(copy.buffer);
  const setMode = (offset: number, mode: number) => {
    const value = view.getUint32(offset, true);
    view.setUint32(
      offset,
      ((value & ~APIC_LVT_DELIVERY_MODE_MASK) | (mode << APIC_LVT_DELIVERY_MODE_SHIFT)) >>> 0,
      true,
    );
  };
  setMode(APIC_LVT_LINT0, APIC_MODE_EXTINT);
  setMode(APIC_LVT_LINT1, APIC_MODE_NMI);
  return copy;
}

/** Leaf 0x40000001: KVM's paravirtual features (EAX). */
export const CPUID_LEAF_KVM_FEATURES = 0x4000_0001;

/**
 * KVM's paravirtual MSRs by the feature bit (leaf 0x40000001 EAX) that offers them, with the value
 * a reset gives them (Documentation/virt/kvm/x86/msr.rst; QEMU's `kvm_put_msrs` at a reset).
 * Each one that is enabled makes KVM write into guest memory (kvm-clock, steal time, PV EOI) or
 * inject events (async page faults) at an address or vector the guest chose.
 */
const KVM_PV_MSRS: readonly { feature: number; index: number; data: bigint }[] = [
  { feature: 0, index: 0x11, data: 0n }, // KVM_FEATURE_CLOCKSOURCE: MSR_KVM_WALL_CLOCK
  { feature: 0, index: 0x12, data: 0n }, // MSR_KVM_SYSTEM_TIME
  { feature: 3, index: 0x4b56_4d00, data: 0n }, // KVM_FEATURE_CLOCKSOURCE2: MSR_KVM_WALL_CLOCK_NEW
  { feature: 3, index: 0x4b56_4d01, data: 0n }, // MSR_KVM_SYSTEM_TIME_NEW
  { feature: 4, index: 0x4b56_4d02, data: 0n }, // KVM_FEATURE_ASYNC_PF: MSR_KVM_ASYNC_PF_EN
  { feature: 5, index: 0x4b56_4d03, data: 0n }, // KVM_FEATURE_STEAL_TIME: MSR_KVM_STEAL_TIME
  { feature: 6, index: 0x4b56_4d04, data: 0n }, // KVM_FEATURE_PV_EOI: MSR_KVM_PV_EOI_EN
  { feature: 12, index: 0x4b56_4d05, data: 1n }, // KVM_FEATURE_POLL_CONTROL: MSR_KVM_POLL_CONTROL (1)
  { feature: 14, index: 0x4b56_4d06, data: 0n }, // KVM_FEATURE_ASYNC_PF_INT: MSR_KVM_ASYNC_PF_INT
];

/**
 * The MSRs a system reset sets on every vCPU: {@link bootMsrs}, and KVM's paravirtual MSRs that the
 * vCPU's CPUID offers (leaf 0x40000001), back at their reset values. Without the latter, a guest
 * that turned on kvm-clock, steal time, PV EOI or async page faults leaves KVM writing into the
 * memory of the next boot, or injecting events it has no handler for.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resetMsrs } from "./x86_cpu.ts";
 * const cpuid = [{ function: 0x4000_0001, index: 0, flags: 0, eax: 1 << 3, ebx: 0, ecx: 0, edx: 0 }];
 * assert.ok(resetMsrs(cpuid).some((m) => m.index === 0x4b56_4d01 && m.data === 0n)); // kvm-clock off
 * ```
 */
export function resetMsrs(cpuid: readonly CpuidEntry[]): MsrEntry[] {
  const features = cpuid.find((e) => e.function === CPUID_LEAF_KVM_FEATURES)?.eax ?? 0;
  return [
    ...bootMsrs(),
    ...KVM_PV_MSRS.filter((m) => (features >>> m.feature) & 1).map(({ index, data }) => ({ index, data })),
  ];
}

/**
 * Bits KVM sets in a vCPU's CPUID at run time from the guest's own state (`kvm_update_cpuid_runtime`):
 * leaf 1 ECX OSXSAVE (CR4.OSXSAVE) and MONITOR (IA32_MISC_ENABLE), leaf 7.0 ECX OSPKE (CR4.PKE).
 * KVM_GET_CPUID2 shows them once Linux turned them on; no host "supports" them, and KVM sets them
 * again from the restored registers, so `cpuidFeaturesLacking` does not count them.
 */
const RUNTIME_BITS: ReadonlyMap<string, number> = new Map([
  ["1.0.ecx", (1 << 27) | (1 << 3)],
  ["7.0.ecx", 1 << 4],
]);

/** The CPUID registers that hold feature bits: leaf, subleaf and register, as `cpuidFeaturesLacking` reads them. */
const FEATURE_REGISTERS: readonly [leaf: number, subleaf: number, register: "eax" | "ebx" | "ecx" | "edx"][] =
  [
    [0x1, 0, "ecx"],
    [0x1, 0, "edx"],
    [0x7, 0, "ebx"],
    [0x7, 0, "ecx"],
    [0x7, 0, "edx"],
    [0x7, 1, "eax"],
    [0xd, 1, "eax"],
    [0x8000_0001, 0, "ecx"],
    [0x8000_0001, 0, "edx"],
    [0x8000_0008, 0, "ebx"],
  ];

/**
 * The feature bits a guest saw (`saved`, a snapshot's CPUID) that `offered` (what this host would
 * give the same vCPU) lacks, as `leaf 0x7.0 ebx 0x00000020` items; empty when the guest may run
 * here. Only the feature registers count (leaves 1, 7, 0xD.1, 0x80000001, 0x80000008): family,
 * cache and topology values may differ without taking anything away from the guest; nor do the
 * bits KVM sets at run time from the guest's CR4 and MSRs (OSXSAVE, MONITOR, OSPKE).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cpuidFeaturesLacking } from "./x86_cpu.ts";
 * const leaf7 = (ebx: number) => ({ function: 7, index: 0, flags: 1, eax: 0, ebx, ecx: 0, edx: 0 });
 * assert.deepEqual(cpuidFeaturesLacking([leaf7(0b1011)], [leaf7(0b1111)]), []);
 * assert.deepEqual(cpuidFeaturesLacking([leaf7(0b1011)], [leaf7(0b0001)]), ["leaf 0x7.0 ebx 0x0000000a"]);
 * ```
 */
export function cpuidFeaturesLacking(saved: readonly CpuidEntry[], offered: readonly CpuidEntry[]): string[] {
  const find = (entries: readonly CpuidEntry[], leaf: number, subleaf: number) =>
    entries.find((e) => e.function === leaf && e.index === subleaf);
  const lacking: string[] = [];
  for (const [leaf, subleaf, register] of FEATURE_REGISTERS) {
    const had = find(saved, leaf, subleaf)?.[register] ?? 0;
    const can = find(offered, leaf, subleaf)?.[register] ?? 0;
    const runtime = RUNTIME_BITS.get(`${leaf.toString(16)}.${subleaf}.${register}`) ?? 0;
    const missing = (had & ~can & ~runtime) >>> 0;
    if (missing !== 0) {
      lacking.push(
        `leaf 0x${leaf.toString(16)}.${subleaf} ${register} 0x${missing.toString(16).padStart(8, "0")}`,
      );
    }
  }
  return lacking;
}
