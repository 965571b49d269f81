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
import { KVM_RUN_LAYOUT, offsetsOf } from "./_structs.ts";
import { KVM_EXIT_INTR, KVM_INTERRUPT, KVM_RUN } from "./ioctls.ts";
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
    if (result === -1 && (errno === EINTR || errno === EAGAIN)) return KVM_EXIT_INTR;
    throw new KvmError("KVM_RUN", errno, {
      detail: `vCPU ${this.id} (worker thread)${kvmRunResult(result)}`,
    });
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
