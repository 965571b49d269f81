/**
 * Decoding of `struct kvm_run` after `KVM_RUN` returned: a pure function from the run page's bytes
 * to a {@link VcpuExit} value. No FFI here, so it is tested on hand-made pages.
 *
 * @module
 */

import {
  KVM_EXIT_DEBUG,
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_IOAPIC_EOI,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_EXIT_UNKNOWN,
} from "./ioctls.ts";
import {
  KVM_RUN_DEBUG_LAYOUT,
  KVM_RUN_EOI_LAYOUT,
  KVM_RUN_EX_LAYOUT,
  KVM_RUN_EXIT_UNION_START,
  KVM_RUN_FAIL_ENTRY_LAYOUT,
  KVM_RUN_HW_LAYOUT,
  KVM_RUN_INTERNAL_LAYOUT,
  KVM_RUN_IO_LAYOUT,
  KVM_RUN_LAYOUT,
  KVM_RUN_MMIO_LAYOUT,
  KVM_RUN_SIZE,
  KVM_RUN_SYSTEM_EVENT_LAYOUT,
  offsetsOf,
} from "./_structs.ts";

// Absolute offsets in the run page, derived once from the struct tables.
const RUN = offsetsOf(KVM_RUN_LAYOUT);
const at = <T extends Record<string, number>>(members: T): T =>
  Object.fromEntries(Object.entries(members).map(([k, v]) => [k, KVM_RUN_EXIT_UNION_START + v])) as T;
const IO = at(offsetsOf(KVM_RUN_IO_LAYOUT));
const MMIO = at(offsetsOf(KVM_RUN_MMIO_LAYOUT));
const EX = at(offsetsOf(KVM_RUN_EX_LAYOUT));
const HW = at(offsetsOf(KVM_RUN_HW_LAYOUT));
const FAIL_ENTRY = at(offsetsOf(KVM_RUN_FAIL_ENTRY_LAYOUT));
const DEBUG = at(offsetsOf(KVM_RUN_DEBUG_LAYOUT));
const EOI = at(offsetsOf(KVM_RUN_EOI_LAYOUT));
const INTERNAL = at(offsetsOf(KVM_RUN_INTERNAL_LAYOUT));
const SYSTEM_EVENT = at(offsetsOf(KVM_RUN_SYSTEM_EVENT_LAYOUT));
/** `data` of `kvm_run.mmio` is `__u8 data[8]`. */
const MMIO_DATA_SIZE = 8;
/** `data` of `internal` and `system_event` is `__u64 data[16]`. */
const EXIT_DATA_WORDS = 16;

/**
 * Port I/O (`KVM_EXIT_IO`). `data` is a live view of the `count × size` bytes at `dataOffset` in
 * the run mapping: read it for an `out`; for an `in`, write the result into it before the next
 * `KVM_RUN`.
 */
export interface IoExit {
  /** Discriminant: `KVM_EXIT_IO`. */
  readonly kind: "io";
  /** `"in"` reads from the device, `"out"` writes to it. */
  readonly direction: "in" | "out";
  /** Access size in bytes: 1, 2 or 4. */
  readonly size: number;
  /** The I/O port. */
  readonly port: number;
  /** Number of accesses (more than 1 for `rep ins`/`rep outs`). */
  readonly count: number;
  /** Offset of the data from the start of `struct kvm_run` (usually 4096). */
  readonly dataOffset: number;
  /** View of the data inside the run mapping. */
  readonly data: Uint8Array;
}

/**
 * Guest access outside any memslot, or a write into a read-only one (`KVM_EXIT_MMIO`). `data` is a
 * live view of `len` bytes of `kvm_run.mmio.data`: a write's value, or where a read's result goes.
 */
export interface MmioExit {
  /** Discriminant: `KVM_EXIT_MMIO`. */
  readonly kind: "mmio";
  /** Guest-physical address of the access. */
  readonly physAddr: bigint;
  /** Access size in bytes (1 to 8). */
  readonly len: number;
  /** True for a store. */
  readonly isWrite: boolean;
  /** View of `len` bytes of `kvm_run.mmio.data`. */
  readonly data: Uint8Array;
}

/** `hlt` with no in-kernel irqchip (`KVM_EXIT_HLT`). */
export interface HltExit {
  /** Discriminant: `KVM_EXIT_HLT`. */
  readonly kind: "hlt";
}

/** Triple fault (`KVM_EXIT_SHUTDOWN`): the guest is dead until reset. */
export interface ShutdownExit {
  /** Discriminant: `KVM_EXIT_SHUTDOWN`. */
  readonly kind: "shutdown";
}

/** VM entry failed (`KVM_EXIT_FAIL_ENTRY`), usually inconsistent guest state. */
export interface FailEntryExit {
  /** Discriminant: `KVM_EXIT_FAIL_ENTRY`. */
  readonly kind: "failEntry";
  /** `hardware_entry_failure_reason`. */
  readonly reason: bigint;
  /** Host CPU that failed. */
  readonly cpu: number;
}

/** KVM could not continue (`KVM_EXIT_INTERNAL_ERROR`); suberror 1 is an emulation failure. */
export interface InternalErrorExit {
  /** Discriminant: `KVM_EXIT_INTERNAL_ERROR`. */
  readonly kind: "internalError";
  /** `KVM_INTERNAL_ERROR_*`. */
  readonly suberror: number;
  /** The first `ndata` words of `internal.data` (at most 16). */
  readonly data: bigint[];
}

/** Guest power-state request (`KVM_EXIT_SYSTEM_EVENT`): shutdown 1, reset 2, crash 3. */
export interface SystemEventExit {
  /** Discriminant: `KVM_EXIT_SYSTEM_EVENT`. */
  readonly kind: "systemEvent";
  /** `KVM_SYSTEM_EVENT_*`. */
  readonly type: number;
  /** The first `ndata` words of `system_event.data` (at most 16; empty before Linux 5.18). */
  readonly data: bigint[];
}

/** `KVM_RUN` returned early for a signal or `immediate_exit` (`KVM_EXIT_INTR`). */
export interface IntrExit {
  /** Discriminant: `KVM_EXIT_INTR`. */
  readonly kind: "intr";
}

/** Guest debug trap (`KVM_EXIT_DEBUG`, `struct kvm_debug_exit_arch`). */
export interface DebugExit {
  /** Discriminant: `KVM_EXIT_DEBUG`. */
  readonly kind: "debug";
  /** Vector: 1 (#DB) or 3 (#BP). */
  readonly exception: number;
  /** Guest RIP of the trap. */
  readonly pc: bigint;
  /** DR6 at the trap. */
  readonly dr6: bigint;
  /** DR7 at the trap. */
  readonly dr7: bigint;
}

/** A guest exception reported to userspace (`KVM_EXIT_EXCEPTION`). */
export interface ExceptionExit {
  /** Discriminant: `KVM_EXIT_EXCEPTION`. */
  readonly kind: "exception";
  /** Exception vector. */
  readonly exception: number;
  /** Error code pushed with it, if any. */
  readonly errorCode: number;
}

/**
 * The guest can take an interrupt now (`KVM_EXIT_IRQ_WINDOW_OPEN`): it asked for one with
 * `request_interrupt_window`, and `ready_for_interrupt_injection` is set.
 */
export interface IrqWindowOpenExit {
  /** Discriminant: `KVM_EXIT_IRQ_WINDOW_OPEN`. */
  readonly kind: "irqWindowOpen";
}

/**
 * The guest EOI'd a level-triggered vector of the userspace IOAPIC (`KVM_EXIT_IOAPIC_EOI`, split
 * irqchip): the IOAPIC clears the remote IRR of the pins with that vector.
 */
export interface IoapicEoiExit {
  /** Discriminant: `KVM_EXIT_IOAPIC_EOI`. */
  readonly kind: "ioapicEoi";
  /** The vector. */
  readonly vector: number;
}

/** Any other exit reason. For `KVM_EXIT_UNKNOWN` (0), `hardwareExitReason` is set. */
export interface UnknownExit {
  /** Discriminant for exits this decoder does not model. */
  readonly kind: "unknown";
  /** The raw `exit_reason`. */
  readonly reason: number;
  /** `hw.hardware_exit_reason`, for `KVM_EXIT_UNKNOWN` only. */
  readonly hardwareExitReason?: bigint;
}

/** Why `KVM_RUN` returned, decoded from the run page. Discriminated on `kind`. */
export type VcpuExit =
  | IoExit
  | MmioExit
  | HltExit
  | ShutdownExit
  | FailEntryExit
  | InternalErrorExit
  | SystemEventExit
  | IntrExit
  | DebugExit
  | ExceptionExit
  | IrqWindowOpenExit
  | IoapicEoiExit
  | UnknownExit;

function words(view: DataView, start: number, ndata: number): bigint[] {
  const out: bigint[] = [];
  const n = Math.min(ndata, EXIT_DATA_WORDS);
  for (let i = 0; i < n; i++) out.push(view.getBigUint64(start + i * 8, true));
  return out;
}

/**
 * The vector of a `KVM_EXIT_IOAPIC_EOI` exit, read straight from the run page (the exit paths of a
 * split irqchip, which must not allocate the decoded exit).
 */
export function ioapicEoiVector(page: Uint8Array): number {
  return page[EOI.vector];
}

/**
 * Decodes the exit described by a `struct kvm_run` (a vCPU's run mapping, or a hand-made copy).
 * Pure: it only reads `run` and returns views into it for data that a handler reads or fills.
 *
 * @throws {RangeError} when `run` is shorter than `struct kvm_run` or an I/O exit's data lies
 *   outside it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeExit } from "./exit.ts";
 * const page = new Uint8Array(8192);
 * const view = new DataView(page.buffer);
 * view.setUint32(8, 2, true); // exit_reason = KVM_EXIT_IO
 * view.setUint8(32, 1); // out
 * view.setUint8(33, 1); // 1 byte
 * view.setUint16(34, 0x3f8, true);
 * view.setUint32(36, 1, true);
 * view.setBigUint64(40, 4096n, true);
 * page[4096] = 0x41;
 * const exit = decodeExit(page);
 * assert.ok(exit.kind === "io" && exit.port === 0x3f8 && exit.data[0] === 0x41);
 * ```
 */
export function decodeExit(run: DataView | Uint8Array): VcpuExit {
  const view = run instanceof DataView ? run : new DataView(run.buffer, run.byteOffset, run.byteLength);
  if (view.byteLength < KVM_RUN_SIZE) {
    throw new RangeError(
      `decodeExit: ${view.byteLength} bytes is shorter than struct kvm_run (${KVM_RUN_SIZE})`,
    );
  }
  const reason = view.getUint32(RUN.exitReason, true);
  switch (reason) {
    case KVM_EXIT_IO: {
      const size = view.getUint8(IO.size);
      const count = view.getUint32(IO.count, true);
      const offset = view.getBigUint64(IO.dataOffset, true);
      const length = size * count;
      if (offset + BigInt(length) > BigInt(view.byteLength)) {
        throw new RangeError(
          `decodeExit: I/O data of ${length} bytes at offset ${offset} is outside the ${view.byteLength}-byte run mapping`,
        );
      }
      const dataOffset = Number(offset);
      return {
        kind: "io",
        direction: view.getUint8(IO.direction) === KVM_EXIT_IO_OUT ? "out" : "in",
        size,
        port: view.getUint16(IO.port, true),
        count,
        dataOffset,
        data: new Uint8Array(view.buffer, view.byteOffset + dataOffset, length),
      };
    }
    case KVM_EXIT_MMIO: {
      const len = view.getUint32(MMIO.len, true);
      return {
        kind: "mmio",
        physAddr: view.getBigUint64(MMIO.physAddr, true),
        len,
        isWrite: view.getUint8(MMIO.isWrite) !== 0,
        data: new Uint8Array(view.buffer, view.byteOffset + MMIO.data, Math.min(len, MMIO_DATA_SIZE)),
      };
    }
    case KVM_EXIT_HLT:
      return { kind: "hlt" };
    case KVM_EXIT_SHUTDOWN:
      return { kind: "shutdown" };
    case KVM_EXIT_INTR:
      return { kind: "intr" };
    case KVM_EXIT_FAIL_ENTRY:
      return {
        kind: "failEntry",
        reason: view.getBigUint64(FAIL_ENTRY.hardwareEntryFailureReason, true),
        cpu: view.getUint32(FAIL_ENTRY.cpu, true),
      };
    case KVM_EXIT_INTERNAL_ERROR:
      return {
        kind: "internalError",
        suberror: view.getUint32(INTERNAL.suberror, true),
        data: words(view, INTERNAL.data, view.getUint32(INTERNAL.ndata, true)),
      };
    case KVM_EXIT_SYSTEM_EVENT:
      return {
        kind: "systemEvent",
        type: view.getUint32(SYSTEM_EVENT.type, true),
        data: words(view, SYSTEM_EVENT.data, view.getUint32(SYSTEM_EVENT.ndata, true)),
      };
    case KVM_EXIT_DEBUG:
      return {
        kind: "debug",
        exception: view.getUint32(DEBUG.exception, true),
        pc: view.getBigUint64(DEBUG.pc, true),
        dr6: view.getBigUint64(DEBUG.dr6, true),
        dr7: view.getBigUint64(DEBUG.dr7, true),
      };
    case KVM_EXIT_EXCEPTION:
      return {
        kind: "exception",
        exception: view.getUint32(EX.exception, true),
        errorCode: view.getUint32(EX.errorCode, true),
      };
    case KVM_EXIT_IRQ_WINDOW_OPEN:
      return { kind: "irqWindowOpen" };
    case KVM_EXIT_IOAPIC_EOI:
      return { kind: "ioapicEoi", vector: view.getUint8(EOI.vector) };
    case KVM_EXIT_UNKNOWN:
      return { kind: "unknown", reason, hardwareExitReason: view.getBigUint64(HW.hardwareExitReason, true) };
    default:
      return { kind: "unknown", reason };
  }
}
