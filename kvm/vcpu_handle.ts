/**
 * Running a vCPU on another thread: a Worker gets a {@link VcpuHandle} built from plain data (the
 * vCPU fd and its `kvm_run` mapping, both process-wide) and calls `KVM_RUN` itself, while the
 * {@link Vcpu} on the thread that created it keeps owning the fd and the mapping. The owner must
 * stop every handle's thread before it closes the vCPU.
 *
 * @module
 */

import { EAGAIN, EINTR } from "./_errno.ts";
import { lastErrno, libc } from "./_libc.ts";
import {
  KVM_MP_STATE_LAYOUT,
  KVM_REGS_LAYOUT,
  KVM_RUN_LAYOUT,
  KVM_SREGS_LAYOUT,
  KVM_VCPU_EVENTS_EXCEPTION_LAYOUT,
  KVM_VCPU_EVENTS_INTERRUPT_LAYOUT,
  KVM_VCPU_EVENTS_LAYOUT,
  KVM_VCPU_EVENTS_NMI_LAYOUT,
  offsetsOf,
} from "./_structs.ts";
import {
  KVM_EXIT_INTR,
  KVM_GET_MP_STATE,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_GET_VCPU_EVENTS,
  KVM_INTERRUPT,
  KVM_MP_STATE_HALTED,
  KVM_MP_STATE_RUNNABLE,
  KVM_RUN,
  KVM_SET_MP_STATE,
  KVM_SET_VCPU_EVENTS,
} from "./ioctls.ts";
import { ioctlBuf } from "./_syscalls.ts";
import { KvmError, kvmRunResult } from "./kvm_error.ts";
import type { Vcpu } from "./vcpu.ts";

const RUN = offsetsOf(KVM_RUN_LAYOUT);

/** What a thread needs to run a vCPU it does not own; plain data, so it can be posted to a Worker. */
export interface VcpuHandleInit {
  /** The vCPU id (APIC id). */
  readonly id: number;
  /** The vCPU fd. */
  readonly fd: number;
  /** Host address of its `kvm_run` mapping. */
  readonly runAddress: bigint;
  /** Size of that mapping. */
  readonly mmapSize: number;
}

/** Describes `vcpu` for a {@link VcpuHandle} on another thread. */
export function vcpuHandleInit(vcpu: Vcpu): VcpuHandleInit {
  return { id: vcpu.id, fd: vcpu.fd, runAddress: vcpu.runAddress, mmapSize: vcpu.mmapSize };
}

/**
 * `KVM_RUN` and the run page of a vCPU owned by another thread.
 *
 * @example
 * ```ts ignore
 * // in a Worker
 * const vcpu = new VcpuHandle(init);
 * while (vcpu.run() !== KVM_EXIT_HLT) serve(vcpu.runPage);
 * ```
 */
export class VcpuHandle {
  /** The vCPU id. */
  readonly id: number;
  /** The whole `kvm_run` mapping, zero-copy. */
  readonly runPage: Uint8Array;
  /** A DataView over {@link runPage}. */
  readonly runView: DataView;
  readonly #fd: number;
  readonly #words: Uint32Array;
  readonly #ioctl = libc().ioctl;
  readonly #interruptBytes = new Uint8Array(4);
  readonly #extIntBytes = new Uint8Array(EXT_INT_SCRATCH);

  /**
   * Maps nothing: views the run page the owning thread mapped, at `init.runAddress`.
   *
   * @throws {TypeError} when `init.runAddress` is 0.
   */
  constructor(init: VcpuHandleInit) {
    const pointer = Deno.UnsafePointer.create(init.runAddress);
    if (pointer === null) throw new TypeError(`VcpuHandle: vCPU ${init.id} has a null kvm_run address`);
    const buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, init.mmapSize);
    this.id = init.id;
    this.#fd = init.fd;
    this.runPage = new Uint8Array(buffer);
    this.runView = new DataView(buffer);
    this.#words = new Uint32Array(buffer);
  }

  /** `KVM_RUN`, as {@link Vcpu.run}: the exit reason, `KVM_EXIT_INTR` when interrupted. */
  run(): number {
    const result = this.#ioctl(this.#fd, KVM_RUN, null);
    if (result === 0) return this.#words[RUN.exitReason / 4];
    const errno = lastErrno();
    if (result === -1 && (errno === EINTR || errno === EAGAIN)) {
      this.#words[RUN.exitReason / 4] = KVM_EXIT_INTR; // as Vcpu.run: the page says why it returned
      return KVM_EXIT_INTR;
    }
    throw new KvmError("KVM_RUN", errno, {
      detail: `vCPU ${this.id} (worker thread)${kvmRunResult(result)}`,
    });
  }

  /** `kvm_run.exit_reason` of the last `KVM_RUN`, as {@link Vcpu.exitReason}. */
  get exitReason(): number {
    return this.#words[RUN.exitReason / 4];
  }

  /** Sets or clears `kvm_run.immediate_exit`. */
  setImmediateExit(on: boolean): void {
    this.runPage[RUN.immediateExit] = on ? 1 : 0;
  }

  /** Whether `kvm_run.immediate_exit` is set, as {@link Vcpu.immediateExit}. */
  get immediateExit(): boolean {
    return this.runPage[RUN.immediateExit] !== 0;
  }

  /** Sets or clears `kvm_run.request_interrupt_window`, as {@link Vcpu.setRequestInterruptWindow}. */
  setRequestInterruptWindow(on: boolean): void {
    this.runPage[RUN.requestInterruptWindow] = on ? 1 : 0;
  }

  /** `kvm_run.ready_for_interrupt_injection` of the last exit, as {@link Vcpu.readyForInterruptInjection}. */
  get readyForInterruptInjection(): boolean {
    return this.runPage[RUN.readyForInterruptInjection] !== 0;
  }

  /**
   * `KVM_INTERRUPT`, as {@link Vcpu.interrupt}: queues the external interrupt `vector` (the split
   * irqchip's PIC gave it).
   *
   * @throws {RangeError} for a vector outside 0–255.
   * @throws {KvmError} when KVM refuses it.
   */
  interrupt(vector: number): void {
    queueInterrupt(this.#fd, this.#interruptBytes, vector, `vCPU ${this.id} (worker thread)`);
  }

  /**
   * Gives the vCPU external interrupt `vector` where a snapshot sees it, as {@link Vcpu.injectExtInt}.
   *
   * @throws {RangeError} for a vector outside 0–255.
   * @throws {KvmError} when KVM refuses a step.
   */
  injectExtInt(vector: number): ExtIntPath {
    return injectExtInt(this.#fd, this.#extIntBytes, vector, `vCPU ${this.id} (worker thread)`);
  }
}

/**
 * `KVM_INTERRUPT` of `vector` on the vCPU `fd`, through `scratch` (4 bytes, the caller's to reuse):
 * {@link Vcpu.interrupt} and {@link VcpuHandle.interrupt} alike.
 *
 * @throws {RangeError} for a vector outside 0–255.
 * @throws {KvmError} when KVM refuses it (EEXIST: one is still pending).
 */
export function queueInterrupt(fd: number, scratch: Uint8Array, vector: number, detail: string): void {
  if (!Number.isInteger(vector) || vector < 0 || vector > 0xff) {
    throw new RangeError(`interrupt: vector ${vector} is not between 0 and 255`);
  }
  new DataView(scratch.buffer, scratch.byteOffset, 4).setUint32(0, vector, true);
  ioctlBuf(fd, KVM_INTERRUPT, scratch, "KVM_INTERRUPT", detail);
}

const EVENTS = offsetsOf(KVM_VCPU_EVENTS_LAYOUT);
const INTERRUPT = offsetsOf(KVM_VCPU_EVENTS_INTERRUPT_LAYOUT);
const EXCEPTION = offsetsOf(KVM_VCPU_EVENTS_EXCEPTION_LAYOUT);
const NMI = offsetsOf(KVM_VCPU_EVENTS_NMI_LAYOUT);
const RFLAGS = offsetsOf(KVM_REGS_LAYOUT).rflags;
const SREGS = offsetsOf(KVM_SREGS_LAYOUT);
/**
 * `KVM_VCPUEVENT_VALID_*` members a SET applies only when flagged: NMI_PENDING (1), SHADOW (4), SMM (8),
 * TRIPLE_FAULT (32). {@link injectExtInt} clears them, so that its SET writes nothing but the
 * interrupt: an NMI or INIT another vCPU queued between its GET and SET stays queued.
 */
const EVENTS_ONLY_WHEN_FLAGGED = 0x01 | 0x04 | 0x08 | 0x20;
const RFLAGS_IF = 1n << 9n;
const CR4_VMXE = 1n << 13n;
const EFER_SVME = 1n << 12n;
const REGS_AT = KVM_VCPU_EVENTS_LAYOUT.size;
const SREGS_AT = REGS_AT + KVM_REGS_LAYOUT.size;
const MP_AT = SREGS_AT + KVM_SREGS_LAYOUT.size;
/** Bytes of scratch {@link injectExtInt} needs: the events, the registers, the special registers, the MP state. */
export const EXT_INT_SCRATCH: number = MP_AT + KVM_MP_STATE_LAYOUT.size;

/** How {@link injectExtInt} gave a vector. */
export type ExtIntPath = "events" | "queued";

/**
 * Gives the vCPU `fd` the external interrupt `vector` the split irqchip's PIC acknowledged, in the
 * state KVM's own injection step leaves a vector from `KVM_INTERRUPT` in, without waiting for that
 * step: the interrupt marked injected with `vector` (`KVM_SET_VCPU_EVENTS`, its other members
 * written back as read and the ones applied only when flagged left out), and a halted vCPU made
 * runnable (`KVM_SET_MP_STATE`), as the interrupt wakes it. Returns "events".
 *
 * Why not `KVM_INTERRUPT`: KVM keeps that vector apart (`pending_external_vector`) until the next
 * entry takes it in, and `KVM_GET_VCPU_EVENTS` does not report it. A `KVM_RUN` that returns before
 * that step — `immediate_exit` set by a kick that came after the vector was given, or a halted vCPU
 * woken by it that then sees the kick's signal — left it there, and a snapshot taken in that kick
 * lost an interrupt the PIC had already put in service: the restored guest slept for ever.
 *
 * An injected event is not checked again at entry, so the vCPU's own state must allow it now, which
 * the caller's `ready_for_interrupt_injection` (of the last exit) may no longer say after registers
 * were written: interrupts on (RFLAGS.IF), no interrupt shadow, no event being delivered or
 * pending. And a vCPU that may be running a nested guest (EFER.SVME or CR4.VMXE on) needs KVM to
 * decide between its guest and itself (an exit to L1 for an intercepted interrupt). Where any of
 * that fails, the vector goes through `KVM_INTERRUPT` after all, as QEMU gives it, and "queued" is
 * returned. `scratch` is {@link EXT_INT_SCRATCH} bytes, the caller's to reuse.
 *
 * @throws {RangeError} for a vector outside 0–255.
 * @throws {KvmError} when KVM refuses a step.
 */
export function injectExtInt(fd: number, scratch: Uint8Array, vector: number, detail: string): ExtIntPath {
  if (!Number.isInteger(vector) || vector < 0 || vector > 0xff) {
    throw new RangeError(`injectExtInt: vector ${vector} is not between 0 and 255`);
  }
  const view = new DataView(scratch.buffer, scratch.byteOffset, scratch.byteLength);
  const events = scratch.subarray(0, REGS_AT);
  ioctlBuf(fd, KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS", detail);
  const busy = events[EVENTS.interrupt + INTERRUPT.injected] | events[EVENTS.interrupt + INTERRUPT.shadow] |
    events[EVENTS.exception + EXCEPTION.injected] | events[EVENTS.exception + EXCEPTION.pending] |
    events[EVENTS.nmi + NMI.injected];
  let direct = busy === 0;
  if (direct) {
    ioctlBuf(fd, KVM_GET_REGS, scratch.subarray(REGS_AT, SREGS_AT), "KVM_GET_REGS", detail);
    ioctlBuf(fd, KVM_GET_SREGS, scratch.subarray(SREGS_AT, MP_AT), "KVM_GET_SREGS", detail);
    direct = (view.getBigUint64(REGS_AT + RFLAGS, true) & RFLAGS_IF) !== 0n &&
      (view.getBigUint64(SREGS_AT + SREGS.cr4, true) & CR4_VMXE) === 0n &&
      (view.getBigUint64(SREGS_AT + SREGS.efer, true) & EFER_SVME) === 0n;
  }
  if (!direct) {
    queueInterrupt(fd, scratch.subarray(0, 4), vector, detail);
    return "queued";
  }
  view.setUint32(EVENTS.flags, view.getUint32(EVENTS.flags, true) & ~EVENTS_ONLY_WHEN_FLAGGED, true);
  events[EVENTS.interrupt + INTERRUPT.injected] = 1;
  events[EVENTS.interrupt + INTERRUPT.nr] = vector;
  events[EVENTS.interrupt + INTERRUPT.soft] = 0;
  ioctlBuf(fd, KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS", detail);
  const mp = scratch.subarray(MP_AT, EXT_INT_SCRATCH);
  ioctlBuf(fd, KVM_GET_MP_STATE, mp, "KVM_GET_MP_STATE", detail);
  if (view.getUint32(MP_AT, true) !== KVM_MP_STATE_HALTED) return "events";
  view.setUint32(MP_AT, KVM_MP_STATE_RUNNABLE, true);
  ioctlBuf(fd, KVM_SET_MP_STATE, mp, "KVM_SET_MP_STATE", detail);
  return "events";
}
