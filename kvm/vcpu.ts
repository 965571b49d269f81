/**
 * A KVM virtual CPU: its fd, its `kvm_run` mapping, and one method per vCPU ioctl.
 *
 * @module
 */

import { E2BIG, EAGAIN, EINTR } from "./_errno.ts";
import { lastErrno, type Libc, libc } from "./_libc.ts";
import {
  type AssertTrue,
  decodeFromBytes,
  decodeStruct,
  encodeStruct,
  encodeToBytes,
  KVM_CPUID2_LAYOUT,
  KVM_CPUID_ENTRY2_LAYOUT,
  KVM_DEBUGREGS_LAYOUT,
  KVM_DTABLE_LAYOUT,
  KVM_FPU_LAYOUT,
  KVM_GUEST_DEBUG_LAYOUT,
  KVM_LAPIC_STATE_LAYOUT,
  KVM_MAX_XCRS,
  KVM_MP_STATE_LAYOUT,
  KVM_MSR_ENTRY_LAYOUT,
  KVM_MSRS_LAYOUT,
  KVM_REGS_LAYOUT,
  KVM_RUN_LAYOUT,
  KVM_RUN_SIZE,
  KVM_SEGMENT_LAYOUT,
  KVM_SREGS_LAYOUT,
  KVM_TRANSLATION_LAYOUT,
  KVM_VCPU_EVENTS_LAYOUT,
  KVM_XCR_LAYOUT,
  KVM_XCRS_ENTRIES_START,
  KVM_XCRS_LAYOUT,
  KVM_XSAVE_SIZE,
  offsetsOf,
  type SameType,
  structBuffer,
  type ValueOf,
} from "./_structs.ts";
import {
  closeFd,
  detach,
  ioctlBuf,
  ioctlNone,
  ioctlU64,
  MAP_SHARED,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "./_syscalls.ts";
import {
  KVM_EXIT_INTR,
  KVM_GET_CPUID2,
  KVM_GET_DEBUGREGS,
  KVM_GET_FPU,
  KVM_GET_LAPIC,
  KVM_GET_MP_STATE,
  KVM_GET_MSRS,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_GET_TSC_KHZ,
  KVM_GET_VCPU_EVENTS,
  KVM_GET_XCRS,
  KVM_GET_XSAVE,
  KVM_GET_XSAVE2,
  KVM_RUN,
  KVM_SET_CPUID2,
  KVM_SET_DEBUGREGS,
  KVM_SET_FPU,
  KVM_SET_GUEST_DEBUG,
  KVM_SET_LAPIC,
  KVM_SET_MP_STATE,
  KVM_SET_MSRS,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_TSC_KHZ,
  KVM_SET_VCPU_EVENTS,
  KVM_SET_XCRS,
  KVM_SET_XSAVE,
  KVM_TRANSLATE,
} from "./ioctls.ts";
import { KVM_ERROR_PARTIAL, KvmError, kvmRunResult } from "./kvm_error.ts";
import { EXT_INT_SCRATCH, type ExtIntPath, injectExtInt, queueInterrupt } from "./vcpu_handle.ts";

/**
 * General registers (`struct kvm_regs`, 144 bytes), all 64-bit and so `bigint`.
 *
 * The struct interfaces of this file are written out for their documentation; each is checked at
 * compile time to be exactly what its layout in `_structs.ts` decodes to.
 */
export interface KvmRegs {
  /** `rax`. */
  rax: bigint;
  /** `rbx`. */
  rbx: bigint;
  /** `rcx`. */
  rcx: bigint;
  /** `rdx`. */
  rdx: bigint;
  /** `rsi`. */
  rsi: bigint;
  /** `rdi`. */
  rdi: bigint;
  /** `rsp`. */
  rsp: bigint;
  /** `rbp`. */
  rbp: bigint;
  /** `r8`. */
  r8: bigint;
  /** `r9`. */
  r9: bigint;
  /** `r10`. */
  r10: bigint;
  /** `r11`. */
  r11: bigint;
  /** `r12`. */
  r12: bigint;
  /** `r13`. */
  r13: bigint;
  /** `r14`. */
  r14: bigint;
  /** `r15`. */
  r15: bigint;
  /** The instruction pointer. */
  rip: bigint;
  /** RFLAGS; bit 1 is reserved and must be set (`0x2n` is the quiet value). */
  rflags: bigint;
}

/** A segment register with its hidden descriptor cache (`struct kvm_segment`, 24 bytes). */
export interface KvmSegment {
  /** Linear base address. */
  base: bigint;
  /** Limit in bytes (already scaled by the granularity bit, as KVM reports it). */
  limit: number;
  /** The visible selector. */
  selector: number;
  /** Descriptor type (4 bits: e.g. 0xb execute/read accessed code, 0x3 read/write accessed data). */
  type: number;
  /** Present bit (0 or 1). */
  present: number;
  /** Descriptor privilege level (0–3). */
  dpl: number;
  /** Default operation size: 1 for 32-bit code and data. */
  db: number;
  /** 1 for a code or data segment, 0 for a system segment (TSS, LDT). */
  s: number;
  /** 1 for 64-bit code. */
  l: number;
  /** Granularity: 1 when the limit counts 4 KiB pages. */
  g: number;
  /** Available for software. */
  avl: number;
  /** 1 when the register holds no usable segment (a null selector). */
  unusable: number;
}

/** GDTR or IDTR (`struct kvm_dtable`, 16 bytes). */
export interface KvmDtable {
  /** Linear base address of the table. */
  base: bigint;
  /** Size of the table in bytes, minus one. */
  limit: number;
}

/** Special registers (`struct kvm_sregs`, 312 bytes): segments, descriptor tables, control registers, EFER. */
export interface KvmSregs {
  /** `CS`. */
  cs: KvmSegment;
  /** `DS`. */
  ds: KvmSegment;
  /** `ES`. */
  es: KvmSegment;
  /** `FS`. */
  fs: KvmSegment;
  /** `GS`. */
  gs: KvmSegment;
  /** `SS`. */
  ss: KvmSegment;
  /** The task register. */
  tr: KvmSegment;
  /** The local descriptor table register. */
  ldt: KvmSegment;
  /** The global descriptor table register. */
  gdt: KvmDtable;
  /** The interrupt descriptor table register. */
  idt: KvmDtable;
  /** CR0 (PE bit 0, PG bit 31). */
  cr0: bigint;
  /** CR2: the last page-fault address. */
  cr2: bigint;
  /** CR3: the page-table root. */
  cr3: bigint;
  /** CR4 (PAE bit 5). */
  cr4: bigint;
  /** CR8: the task priority. */
  cr8: bigint;
  /** EFER (LME bit 8, LMA bit 10). */
  efer: bigint;
  /** The IA32_APIC_BASE MSR. */
  apicBase: bigint;
  /** Pending external interrupts, one bit per vector (4 × 64 bits); userspace irqchip only. */
  interruptBitmap: bigint[];
}

/** x87 and SSE state (`struct kvm_fpu`, 416 bytes), in the FXSAVE-like form KVM uses. */
export interface KvmFpu {
  /** The eight x87 registers, 16 bytes each. */
  fpr: Uint8Array;
  /** x87 control word (0x37f after reset). */
  fcw: number;
  /** x87 status word. */
  fsw: number;
  /** Abridged x87 tag word. */
  ftwx: number;
  /** Opcode of the last x87 instruction. */
  lastOpcode: number;
  /** Address of the last x87 instruction. */
  lastIp: bigint;
  /** Address of the last x87 operand. */
  lastDp: bigint;
  /** The sixteen XMM registers, 16 bytes each. */
  xmm: Uint8Array;
  /** SSE control and status (0x1f80 after reset). */
  mxcsr: number;
}

/** Pending exceptions, interrupts, NMI and SMI state (`struct kvm_vcpu_events`, 64 bytes). */
export interface VcpuEvents {
  /** The exception being injected or pending. */
  exception: {
    /** 1 while an exception is being injected. */
    injected: number;
    /** The vector. */
    nr: number;
    /** 1 when {@link errorCode} is valid. */
    hasErrorCode: number;
    /** 1 while pending (needs KVM_CAP_EXCEPTION_PAYLOAD). */
    pending: number;
    /** The error code pushed with the exception. */
    errorCode: number;
  };
  /** The external interrupt being injected. */
  interrupt: {
    /** 1 while an interrupt is being injected. */
    injected: number;
    /** The vector. */
    nr: number;
    /** 1 for a software interrupt (`int n`). */
    soft: number;
    /** Interrupt shadow (after `sti` or `mov ss`). */
    shadow: number;
  };
  /** Non-maskable interrupt state. */
  nmi: {
    /** 1 while an NMI is being injected. */
    injected: number;
    /** 1 while an NMI is pending. */
    pending: number;
    /** 1 while NMIs are blocked. */
    masked: number;
  };
  /** The vector of a pending SIPI. */
  sipiVector: number;
  /** `KVM_VCPUEVENT_VALID_*`: which members `KVM_SET_VCPU_EVENTS` applies. */
  flags: number;
  /** System-management mode state. */
  smi: {
    /** 1 while in SMM. */
    smm: number;
    /** 1 while an SMI is pending. */
    pending: number;
    /** 1 when the SMI arrived inside an NMI handler. */
    smmInsideNmi: number;
    /** 1 when an INIT arrived in SMM and waits for its end. */
    latchedInit: number;
  };
  /** Triple-fault state (Linux 5.19+, KVM_CAP_X86_TRIPLE_FAULT_EVENT). */
  tripleFault: {
    /** 1 while a triple fault is pending. */
    pending: number;
  };
  /** 1 when {@link exceptionPayload} is valid. */
  exceptionHasPayload: number;
  /** The exception payload (CR2 of a page fault, DR6 of a debug exception). */
  exceptionPayload: bigint;
}

/** One MSR (`struct kvm_msr_entry`, 16 bytes). */
export interface MsrEntry {
  /** The MSR number (e.g. 0xc000_0080 for EFER). */
  index: number;
  /** Its 64-bit value. */
  data: bigint;
}

/** First `nent` tried for a `struct kvm_cpuid2` read (75 entries on this platform; QEMU starts at 100). */
const CPUID_ENTRIES_START = 128;
/** Upper bound for the doubling on E2BIG (KVM's own KVM_MAX_CPUID_ENTRIES is 256). */
const CPUID_ENTRIES_MAX = 4096;

/**
 * The entries of a `struct kvm_cpuid2` that `call` fills (KVM_GET_SUPPORTED_CPUID, KVM_GET_CPUID2):
 * the buffer doubles while KVM answers E2BIG.
 */
export function readCpuidEntries(call: (bytes: Uint8Array) => void): CpuidEntry[] {
  const header = KVM_CPUID2_LAYOUT.size;
  const entrySize = KVM_CPUID_ENTRY2_LAYOUT.size;
  for (let capacity = CPUID_ENTRIES_START;; capacity *= 2) {
    const { bytes, view } = structBuffer(header + capacity * entrySize);
    encodeStruct(KVM_CPUID2_LAYOUT, { nent: capacity }, view);
    try {
      call(bytes);
    } catch (error) {
      if (error instanceof KvmError && error.errno === E2BIG && capacity < CPUID_ENTRIES_MAX) continue;
      throw error;
    }
    const count = decodeStruct(KVM_CPUID2_LAYOUT, view).nent;
    return Array.from(
      { length: count },
      (_, i) => decodeStruct(KVM_CPUID_ENTRY2_LAYOUT, view, header + i * entrySize),
    );
  }
}

/** One CPUID leaf (`struct kvm_cpuid_entry2`, 40 bytes). */
export interface CpuidEntry {
  /** The leaf (EAX input). */
  function: number;
  /** The subleaf (ECX input), meaningful when `flags` has KVM_CPUID_FLAG_SIGNIFICANT_INDEX. */
  index: number;
  /** KVM_CPUID_FLAG_* bits. */
  flags: number;
  /** EAX output. */
  eax: number;
  /** EBX output. */
  ebx: number;
  /** ECX output. */
  ecx: number;
  /** EDX output. */
  edx: number;
}

/**
 * What `KVM_SET_GUEST_DEBUG` sets (`struct kvm_guest_debug`, 72 bytes): the `KVM_GUESTDBG_*` control
 * bits and, on x86, the debug registers the guest runs with while `KVM_GUESTDBG_USE_HW_BP` is set.
 */
export interface GuestDebug {
  /** `KVM_GUESTDBG_*` bits; 0 hands the debug registers back to the guest. */
  control: number;
  /** DR0–DR7 (eight values; DR0–DR3 are addresses, DR7 the enable/type/length word; DR4–DR6 unused). */
  debugreg: bigint[];
}

/** The result of `KVM_TRANSLATE` (`struct kvm_translation`, 24 bytes). */
export interface Translation {
  /** The guest-virtual (linear) address that was translated. */
  linearAddress: bigint;
  /** Its guest-physical address; meaningful only when {@link valid} is 1. */
  physicalAddress: bigint;
  /** 1 when the page is mapped (present at every level of the page tables). */
  valid: number;
  /** 1 when the page is writable. */
  writeable: number;
  /** 1 when the page is accessible from user mode. */
  usermode: number;
}

/** DR0–DR3, DR6 and DR7 as the guest set them (`struct kvm_debugregs`, 128 bytes). */
export interface KvmDebugregs {
  /** DR0–DR3: the four breakpoint addresses. */
  db: bigint[];
  /** DR6: the debug status. */
  dr6: bigint;
  /** DR7: the debug control. */
  dr7: bigint;
  /** No flags are defined; 0. */
  flags: bigint;
}

/** One extended control register (`struct kvm_xcr`): XCR0 is the XSAVE feature mask. */
export interface XcrEntry {
  /** The XCR number (0 for XCR0). */
  xcr: number;
  /** Its value. */
  value: bigint;
}

// Compile-time checks: each interface above is exactly what its layout decodes to.
type _KvmRegsMatches = AssertTrue<SameType<KvmRegs, ValueOf<typeof KVM_REGS_LAYOUT>>>;
type _KvmSegmentMatches = AssertTrue<SameType<KvmSegment, ValueOf<typeof KVM_SEGMENT_LAYOUT>>>;
type _KvmDtableMatches = AssertTrue<SameType<KvmDtable, ValueOf<typeof KVM_DTABLE_LAYOUT>>>;
type _KvmSregsMatches = AssertTrue<SameType<KvmSregs, ValueOf<typeof KVM_SREGS_LAYOUT>>>;
type _KvmFpuMatches = AssertTrue<SameType<KvmFpu, ValueOf<typeof KVM_FPU_LAYOUT>>>;
type _VcpuEventsMatches = AssertTrue<SameType<VcpuEvents, ValueOf<typeof KVM_VCPU_EVENTS_LAYOUT>>>;
type _MsrEntryMatches = AssertTrue<SameType<MsrEntry, ValueOf<typeof KVM_MSR_ENTRY_LAYOUT>>>;
type _CpuidEntryMatches = AssertTrue<SameType<CpuidEntry, ValueOf<typeof KVM_CPUID_ENTRY2_LAYOUT>>>;
type _GuestDebugMatches = AssertTrue<SameType<GuestDebug, ValueOf<typeof KVM_GUEST_DEBUG_LAYOUT>>>;
type _DebugregsMatches = AssertTrue<SameType<KvmDebugregs, ValueOf<typeof KVM_DEBUGREGS_LAYOUT>>>;
type _XcrMatches = AssertTrue<SameType<XcrEntry, ValueOf<typeof KVM_XCR_LAYOUT>>>;
type _TranslationMatches = AssertTrue<SameType<Translation, ValueOf<typeof KVM_TRANSLATION_LAYOUT>>>;

const RUN = offsetsOf(KVM_RUN_LAYOUT);
/** `exit_reason` as an index into a Uint32Array over the run page. */
const EXIT_REASON_WORD = RUN.exitReason / 4;

/** Options for the {@link Vcpu} constructor. */
export interface VcpuOptions {
  /** Bytes to map from the vCPU fd (`KVM_GET_VCPU_MMAP_SIZE`). */
  readonly mmapSize: number;
  /** Called once when the vCPU closes (its VM uses it to forget the vCPU). */
  readonly onClose?: () => void;
}

/**
 * A vCPU. Created by {@link Vm.createVcpu}; owns the vCPU fd and the shared `kvm_run` mapping, both
 * released by {@link Vcpu.close} (idempotent; `using` works).
 *
 * {@link Vcpu.run} is the hot path: one FFI call with pre-bound symbols and no allocation; it
 * returns the raw exit reason, and {@link decodeExit}`(vcpu.runPage)` tells the rest.
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * import { decodeExit, GuestMemory, Kvm, KVM_EXIT_HLT, KVM_EXIT_IO } from "./mod.ts";
 * using kvm = Kvm.open();
 * using vm = kvm.createVm();
 * using ram = new GuestMemory(0x10000);
 * vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: ram.size, userspaceAddr: ram.hostAddress });
 * ram.bytes.set([0xe4, 0x60, 0xf4], 0x1000); // in al, 0x60; hlt
 * using vcpu = vm.createVcpu(0);
 * const sregs = vcpu.getSregs();
 * vcpu.setSregs({ ...sregs, cs: { ...sregs.cs, base: 0n, selector: 0 } }); // never rely on the reset CS
 * vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n, rflags: 0x2n });
 * if (vcpu.run() === KVM_EXIT_IO) {
 *   const exit = decodeExit(vcpu.runPage);
 *   if (exit.kind === "io" && exit.direction === "in") exit.data[0] = 0x1c; // what `in` returns
 * }
 * assert.equal(vcpu.run(), KVM_EXIT_HLT);
 * assert.equal(vcpu.getRegs().rax & 0xffn, 0x1cn);
 * ```
 */
export class Vcpu implements Disposable {
  /** The vCPU id given to KVM_CREATE_VCPU (the APIC id). */
  readonly id: number;
  #fd: number;
  readonly #ioctl: Libc["ioctl"];
  readonly #mapping: Deno.PointerObject;
  readonly #mmapSize: number;
  readonly #runPage: Uint8Array;
  readonly #runView: DataView;
  readonly #runWords: Uint32Array;
  #onClose: (() => void) | undefined;
  /** `struct kvm_interrupt` for {@link interrupt}, made at its first call. */
  #interruptBytes: Uint8Array | undefined;
  #extIntBytes: Uint8Array | undefined;

  /**
   * Takes ownership of a vCPU fd and maps its `kvm_run`. Use {@link Vm.createVcpu} instead; this is
   * public for wrapping an fd obtained elsewhere. On failure the fd is closed.
   */
  constructor(fd: number, id: number, options: VcpuOptions) {
    this.id = id;
    this.#fd = fd;
    this.#mmapSize = options.mmapSize;
    let mapping;
    try {
      if (options.mmapSize < KVM_RUN_SIZE) {
        throw new RangeError(`Vcpu: mmap size ${options.mmapSize} is smaller than struct kvm_run`);
      }
      mapping = mmap(
        BigInt(options.mmapSize),
        PROT_READ | PROT_WRITE,
        MAP_SHARED,
        fd,
        `kvm_run of vCPU ${id}`,
      );
    } catch (error) {
      closeFd(fd);
      throw error;
    }
    this.#mapping = mapping.pointer;
    // Views created once: the run loop reads exit_reason through a cached Uint32Array (~1 ns)
    // instead of UnsafePointerView (~50 ns), and decoders get the same page every time.
    const buffer = Deno.UnsafePointerView.getArrayBuffer(mapping.pointer, options.mmapSize);
    this.#runPage = new Uint8Array(buffer);
    this.#runView = new DataView(buffer);
    this.#runWords = new Uint32Array(buffer);
    this.#ioctl = libc().ioctl;
    this.#onClose = options.onClose;
  }

  /** The vCPU fd (-1 after close). */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@link Vcpu.close} has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * The whole `kvm_run` mapping (`KVM_GET_VCPU_MMAP_SIZE` bytes, PIO data included), zero-copy and
   * the same object each time. Detached (length 0) after close.
   */
  get runPage(): Uint8Array {
    this.#checkOpen();
    return this.#runPage;
  }

  /** Size of the `kvm_run` mapping in bytes. */
  get mmapSize(): number {
    return this.#mmapSize;
  }

  /** Host address of the `kvm_run` mapping (for a {@link VcpuKicker} on another thread). */
  get runAddress(): bigint {
    this.#checkOpen();
    return BigInt(Deno.UnsafePointer.value(this.#mapping));
  }

  /** A DataView over {@link Vcpu.runPage}. */
  get runView(): DataView {
    this.#checkOpen();
    return this.#runView;
  }

  /**
   * `KVM_RUN`: runs the guest until it exits to userspace and returns `kvm_run.exit_reason`
   * (`KVM_EXIT_IO`, …). When the call is interrupted by a signal or `immediate_exit` (EINTR, or
   * EAGAIN), returns `KVM_EXIT_INTR` and stores it as the exit reason instead of throwing.
   *
   * Before calling again after an `in` or an MMIO read, fill the data the exit points to.
   */
  run(): number {
    const result = this.#ioctl(this.#fd, KVM_RUN, null);
    if (result === 0) return this.#runWords[EXIT_REASON_WORD];
    return this.#runFailed(result, lastErrno());
  }

  #runFailed(result: number, errno: number): number {
    this.#checkOpen();
    if (result === -1 && (errno === EINTR || errno === EAGAIN)) {
      this.#runWords[EXIT_REASON_WORD] = KVM_EXIT_INTR;
      return KVM_EXIT_INTR;
    }
    throw new KvmError("KVM_RUN", errno, { detail: `vCPU ${this.id}${kvmRunResult(result)}` });
  }

  /**
   * Sets `kvm_run.immediate_exit`: while set, `KVM_RUN` returns at once with EINTR (reported as
   * `KVM_EXIT_INTR`). With a signal sent to the vCPU thread this makes a race-free kick
   * (api.rst, KVM_CAP_IMMEDIATE_EXIT).
   */
  setImmediateExit(on: boolean): void {
    this.#checkOpen();
    this.#runPage[RUN.immediateExit] = on ? 1 : 0;
  }

  /**
   * `kvm_run.exit_reason` of the last `KVM_RUN` (`KVM_EXIT_INTR` after one that a kick or signal
   * ended; 0 before the first).
   */
  get exitReason(): number {
    this.#checkOpen();
    return this.#runWords[EXIT_REASON_WORD];
  }

  /** Whether `kvm_run.immediate_exit` is set: a kick is pending, and the next `KVM_RUN` returns at once. */
  get immediateExit(): boolean {
    this.#checkOpen();
    return this.#runPage[RUN.immediateExit] !== 0;
  }

  /**
   * Sets `kvm_run.request_interrupt_window`: while set, `KVM_RUN` returns with
   * `KVM_EXIT_IRQ_WINDOW_OPEN` as soon as the guest can take an external interrupt (a split or no
   * irqchip: the VMM's own PIC has one to give).
   */
  setRequestInterruptWindow(on: boolean): void {
    this.#checkOpen();
    this.#runPage[RUN.requestInterruptWindow] = on ? 1 : 0;
  }

  /**
   * `kvm_run.ready_for_interrupt_injection` of the last exit: the guest would take an external
   * interrupt queued with {@link interrupt} now (interrupts on, none being delivered, and with a split
   * irqchip the LAPIC accepting ExtINT).
   */
  get readyForInterruptInjection(): boolean {
    this.#checkOpen();
    return this.#runPage[RUN.readyForInterruptInjection] !== 0;
  }

  /**
   * `KVM_INTERRUPT`: queues external interrupt `vector`, as the INTA cycle of the VMM's own 8259
   * gives it (a split irqchip or none; with the in-kernel PIC KVM refuses it, ENXIO).
   *
   * @throws {RangeError} for a vector outside 0–255.
   * @throws {KvmError} when KVM refuses it (EEXIST: one is still pending).
   */
  interrupt(vector: number): void {
    this.#checkOpen();
    queueInterrupt(this.#fd, this.#interruptBytes ??= new Uint8Array(4), vector, `vCPU ${this.id}`);
  }
  /**
   * Gives the vCPU external interrupt `vector` (the split irqchip's PIC acknowledged it) straight
   * into its event state, as KVM's injection step would take a vector from {@link interrupt}: the
   * interrupt marked injected (`KVM_SET_VCPU_EVENTS`), a halted vCPU made runnable. Unlike
   * `KVM_INTERRUPT`'s, this vector is never where `KVM_GET_VCPU_EVENTS` cannot see it, so a
   * snapshot taken at any later point holds it. Where the vCPU's state does not allow an interrupt
   * now (interrupts off, a shadow, an event in flight) or it may run a nested guest, the vector
   * goes through `KVM_INTERRUPT` instead ("queued"; see vcpu_handle.ts's `injectExtInt`). Give one
   * only when {@link readyForInterruptInjection} says so.
   *
   * @throws {RangeError} for a vector outside 0–255.
   * @throws {KvmError} when KVM refuses a step.
   */
  injectExtInt(vector: number): ExtIntPath {
    this.#checkOpen();
    return injectExtInt(
      this.#fd,
      this.#extIntBytes ??= new Uint8Array(EXT_INT_SCRATCH),
      vector,
      `vCPU ${this.id}`,
    );
  }

  /** `KVM_GET_REGS`. */
  getRegs(): KvmRegs {
    return decodeFromBytes(KVM_REGS_LAYOUT, this.#get(KVM_GET_REGS, KVM_REGS_LAYOUT.size, "KVM_GET_REGS"));
  }

  /** `KVM_SET_REGS`. */
  setRegs(regs: KvmRegs): void {
    this.#set(KVM_SET_REGS, encodeToBytes(KVM_REGS_LAYOUT, regs), "KVM_SET_REGS");
  }

  /** `KVM_GET_SREGS`. */
  getSregs(): KvmSregs {
    return decodeFromBytes(
      KVM_SREGS_LAYOUT,
      this.#get(KVM_GET_SREGS, KVM_SREGS_LAYOUT.size, "KVM_GET_SREGS"),
    );
  }

  /** `KVM_SET_SREGS`. */
  setSregs(sregs: KvmSregs): void {
    this.#set(KVM_SET_SREGS, encodeToBytes(KVM_SREGS_LAYOUT, sregs), "KVM_SET_SREGS");
  }

  /** `KVM_GET_FPU`. */
  getFpu(): KvmFpu {
    return decodeFromBytes(KVM_FPU_LAYOUT, this.#get(KVM_GET_FPU, KVM_FPU_LAYOUT.size, "KVM_GET_FPU"));
  }

  /** `KVM_SET_FPU`. */
  setFpu(fpu: KvmFpu): void {
    this.#set(KVM_SET_FPU, encodeToBytes(KVM_FPU_LAYOUT, fpu), "KVM_SET_FPU");
  }

  /**
   * `KVM_GET_MSRS` for the given MSR numbers.
   *
   * @throws {KvmError} code `"PARTIAL"` when KVM read fewer MSRs than asked (the ioctl returns the
   *   count processed and stops at the first MSR it does not know).
   */
  getMsrs(indices: readonly number[]): MsrEntry[] {
    const { bytes, view } = msrsBuffer(indices.map((index) => ({ index, data: 0n })));
    const done = this.#ioctlBuf(KVM_GET_MSRS, bytes, "KVM_GET_MSRS");
    checkMsrCount("KVM_GET_MSRS", done, indices);
    return indices.map((_, i) =>
      decodeStruct(KVM_MSR_ENTRY_LAYOUT, view, KVM_MSRS_LAYOUT.size + i * KVM_MSR_ENTRY_LAYOUT.size)
    );
  }

  /**
   * `KVM_SET_MSRS`.
   *
   * @throws {KvmError} code `"PARTIAL"` when KVM wrote fewer MSRs than given.
   */
  setMsrs(entries: readonly MsrEntry[]): void {
    const { bytes } = msrsBuffer(entries);
    const done = this.#ioctlBuf(KVM_SET_MSRS, bytes, "KVM_SET_MSRS");
    checkMsrCount("KVM_SET_MSRS", done, entries.map((e) => e.index));
  }

  /** `KVM_GET_CPUID2`: the CPUID leaves the guest sees, as last set. */
  getCpuid2(): CpuidEntry[] {
    return readCpuidEntries((bytes) => this.#ioctlBuf(KVM_GET_CPUID2, bytes, "KVM_GET_CPUID2"));
  }

  /** `KVM_SET_CPUID2`: the CPUID leaves the guest sees (start from {@link Kvm.supportedCpuid}). */
  setCpuid2(entries: readonly CpuidEntry[]): void {
    const header = KVM_CPUID2_LAYOUT.size;
    const { bytes, view } = structBuffer(header + entries.length * KVM_CPUID_ENTRY2_LAYOUT.size);
    encodeStruct(KVM_CPUID2_LAYOUT, { nent: entries.length }, view);
    entries.forEach((entry, i) =>
      encodeStruct(KVM_CPUID_ENTRY2_LAYOUT, entry, view, header + i * KVM_CPUID_ENTRY2_LAYOUT.size)
    );
    this.#ioctlBuf(KVM_SET_CPUID2, bytes, "KVM_SET_CPUID2");
  }

  /** `KVM_GET_LAPIC`: the 1 KiB register page of the in-kernel local APIC. */
  getLapic(): Uint8Array {
    return this.#get(KVM_GET_LAPIC, KVM_LAPIC_STATE_LAYOUT.size, "KVM_GET_LAPIC");
  }

  /** `KVM_SET_LAPIC` with a 1 KiB register page. */
  setLapic(state: Uint8Array): void {
    this.#set(KVM_SET_LAPIC, encodeToBytes(KVM_LAPIC_STATE_LAYOUT, { regs: state }), "KVM_SET_LAPIC");
  }

  /** `KVM_GET_VCPU_EVENTS`. */
  getVcpuEvents(): VcpuEvents {
    return decodeFromBytes(
      KVM_VCPU_EVENTS_LAYOUT,
      this.#get(KVM_GET_VCPU_EVENTS, KVM_VCPU_EVENTS_LAYOUT.size, "KVM_GET_VCPU_EVENTS"),
    );
  }

  /** `KVM_SET_VCPU_EVENTS` (`flags` selects which optional members apply). */
  setVcpuEvents(events: VcpuEvents): void {
    this.#set(KVM_SET_VCPU_EVENTS, encodeToBytes(KVM_VCPU_EVENTS_LAYOUT, events), "KVM_SET_VCPU_EVENTS");
  }

  /** `KVM_GET_MP_STATE`: one of the `KVM_MP_STATE_*` values. */
  getMpState(): number {
    return decodeFromBytes(
      KVM_MP_STATE_LAYOUT,
      this.#get(KVM_GET_MP_STATE, KVM_MP_STATE_LAYOUT.size, "KVM_GET_MP_STATE"),
    )
      .mpState;
  }

  /** `KVM_SET_MP_STATE`. */
  setMpState(state: number): void {
    this.#set(KVM_SET_MP_STATE, encodeToBytes(KVM_MP_STATE_LAYOUT, { mpState: state }), "KVM_SET_MP_STATE");
  }

  /**
   * `KVM_SET_GUEST_DEBUG`: single-step, `int3` interception and hardware breakpoints for this vCPU
   * (a gdb stub calls it on every vCPU before resuming them). While `control` has
   * `KVM_GUESTDBG_ENABLE`, the traps it asks for end `KVM_RUN` with `KVM_EXIT_DEBUG`.
   *
   * @throws {RangeError} when `debugreg` does not hold eight values.
   */
  setGuestDebug(debug: GuestDebug): void {
    this.#set(KVM_SET_GUEST_DEBUG, encodeToBytes(KVM_GUEST_DEBUG_LAYOUT, debug), "KVM_SET_GUEST_DEBUG");
  }

  /**
   * `KVM_TRANSLATE`: the guest-physical address of a guest-virtual one through this vCPU's current
   * paging mode and page tables (identity when paging is off). Check `valid` before using it.
   */
  translate(linearAddress: bigint): Translation {
    const bytes = encodeToBytes(KVM_TRANSLATION_LAYOUT, {
      linearAddress,
      physicalAddress: 0n,
      valid: 0,
      writeable: 0,
      usermode: 0,
    });
    this.#ioctlBuf(KVM_TRANSLATE, bytes, "KVM_TRANSLATE");
    return decodeFromBytes(KVM_TRANSLATION_LAYOUT, bytes);
  }

  /**
   * `KVM_GET_XSAVE` (4 KiB), or `KVM_GET_XSAVE2` with a buffer of `size` bytes when `size` is
   * larger: pass what `vm.checkExtension(KVM_CAP_XSAVE2)` returns, as QEMU does, so AMX state fits.
   * The guest's whole XSAVE area (x87, SSE, AVX, …) in the XSAVE instruction's standard layout.
   */
  getXsave(size: number = KVM_XSAVE_SIZE): Uint8Array {
    if (!Number.isInteger(size) || size < KVM_XSAVE_SIZE) {
      throw new RangeError(`getXsave: size ${size} is below the ${KVM_XSAVE_SIZE} bytes of struct kvm_xsave`);
    }
    if (size === KVM_XSAVE_SIZE) return this.#get(KVM_GET_XSAVE, size, "KVM_GET_XSAVE");
    // KVM_GET_XSAVE2's number encodes sizeof(struct kvm_xsave); the kernel writes `size` bytes.
    return this.#get(KVM_GET_XSAVE2, size, "KVM_GET_XSAVE2");
  }

  /** `KVM_SET_XSAVE` with an area from {@link getXsave} (4 KiB or the XSAVE2 size). */
  setXsave(area: Uint8Array): void {
    if (area.length < KVM_XSAVE_SIZE) {
      throw new RangeError(
        `setXsave: ${area.length} bytes is below the ${KVM_XSAVE_SIZE} of struct kvm_xsave`,
      );
    }
    this.#set(KVM_SET_XSAVE, area.slice(), "KVM_SET_XSAVE");
  }

  /** `KVM_GET_XCRS`: the extended control registers (XCR0). */
  getXcrs(): XcrEntry[] {
    const bytes = this.#get(KVM_GET_XCRS, KVM_XCRS_LAYOUT.size, "KVM_GET_XCRS");
    const view = new DataView(bytes.buffer);
    const count = Math.min(decodeStruct(KVM_XCRS_LAYOUT, view).nrXcrs, KVM_MAX_XCRS);
    return Array.from(
      { length: count },
      (_, i) => decodeStruct(KVM_XCR_LAYOUT, view, KVM_XCRS_ENTRIES_START + i * KVM_XCR_LAYOUT.size),
    );
  }

  /** `KVM_SET_XCRS` (at most 16 entries). */
  setXcrs(xcrs: readonly XcrEntry[]): void {
    if (xcrs.length > KVM_MAX_XCRS) {
      throw new RangeError(`setXcrs: ${xcrs.length} XCRs, at most ${KVM_MAX_XCRS}`);
    }
    const { bytes, view } = structBuffer(KVM_XCRS_LAYOUT.size);
    encodeStruct(KVM_XCRS_LAYOUT, { nrXcrs: xcrs.length, flags: 0 }, view);
    xcrs.forEach((x, i) =>
      encodeStruct(KVM_XCR_LAYOUT, x, view, KVM_XCRS_ENTRIES_START + i * KVM_XCR_LAYOUT.size)
    );
    this.#set(KVM_SET_XCRS, bytes, "KVM_SET_XCRS");
  }

  /** `KVM_GET_DEBUGREGS`: the guest's own debug registers. */
  getDebugregs(): KvmDebugregs {
    return decodeFromBytes(
      KVM_DEBUGREGS_LAYOUT,
      this.#get(KVM_GET_DEBUGREGS, KVM_DEBUGREGS_LAYOUT.size, "KVM_GET_DEBUGREGS"),
    );
  }

  /** `KVM_SET_DEBUGREGS` (`flags` must be 0). */
  setDebugregs(regs: KvmDebugregs): void {
    this.#set(KVM_SET_DEBUGREGS, encodeToBytes(KVM_DEBUGREGS_LAYOUT, regs), "KVM_SET_DEBUGREGS");
  }

  /** `KVM_GET_TSC_KHZ`: the guest's TSC frequency in kHz (KVM_CAP_GET_TSC_KHZ). */
  getTscKhz(): number {
    this.#checkOpen();
    return ioctlNone(this.#fd, KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", `vCPU ${this.id}`);
  }

  /** `KVM_SET_TSC_KHZ`: scales the guest's TSC to `khz` (KVM_CAP_TSC_CONTROL; needs TSC scaling). */
  setTscKhz(khz: number): void {
    this.#checkOpen();
    if (!Number.isInteger(khz) || khz <= 0 || khz > 0xffff_ffff) {
      throw new RangeError(`setTscKhz: ${khz} kHz is not a positive 32-bit integer`);
    }
    ioctlU64(this.#fd, KVM_SET_TSC_KHZ, BigInt(khz), "KVM_SET_TSC_KHZ", `vCPU ${this.id}, ${khz} kHz`);
  }

  /** Unmaps `kvm_run` and closes the vCPU fd. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    detach(this.#runPage.buffer as ArrayBuffer); // views read as empty, never unmapped memory
    munmap(this.#mapping, BigInt(this.#mmapSize));
    closeFd(fd);
    const onClose = this.#onClose;
    this.#onClose = undefined;
    onClose?.();
  }

  /** Same as {@link Vcpu.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #checkOpen(): void {
    if (this.#fd < 0) throw new Deno.errors.BadResource(`vCPU ${this.id} was used after close()`);
  }

  #ioctlBuf(request: number, bytes: Uint8Array, op: string): number {
    this.#checkOpen();
    return ioctlBuf(this.#fd, request, bytes, op, `vCPU ${this.id}`);
  }

  #get(request: number, size: number, op: string): Uint8Array {
    const bytes = new Uint8Array(size);
    this.#ioctlBuf(request, bytes, op);
    return bytes;
  }

  #set(request: number, bytes: Uint8Array, op: string): void {
    this.#ioctlBuf(request, bytes, op);
  }
}

function msrsBuffer(entries: readonly MsrEntry[]): { bytes: Uint8Array; view: DataView } {
  const header = KVM_MSRS_LAYOUT.size;
  const buffer = structBuffer(header + entries.length * KVM_MSR_ENTRY_LAYOUT.size);
  encodeStruct(KVM_MSRS_LAYOUT, { nmsrs: entries.length }, buffer.view);
  entries.forEach((entry, i) =>
    encodeStruct(KVM_MSR_ENTRY_LAYOUT, entry, buffer.view, header + i * KVM_MSR_ENTRY_LAYOUT.size)
  );
  return buffer;
}

function checkMsrCount(op: string, done: number, indices: readonly number[]): void {
  if (done === indices.length) return;
  const refused = indices[done];
  throw new KvmError(op, 0, {
    code: KVM_ERROR_PARTIAL,
    detail: `${done} of ${indices.length} MSRs processed; MSR 0x${
      refused.toString(16)
    } (entry ${done}) was refused`,
  });
}
