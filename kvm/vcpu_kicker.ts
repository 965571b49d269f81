/**
 * Kicking a vCPU out of `KVM_RUN` from another thread — for example out of a guest `hlt`, which
 * with the in-kernel irqchip sleeps inside the ioctl — so the vCPU's thread can look at new input
 * or a monitor command.
 *
 * Race-free as QEMU's `kvm_cpu_kick`: set `kvm_run.immediate_exit` first (if the vCPU thread is
 * about to enter `KVM_RUN`, the ioctl returns EINTR at once), then send SIGUSR2 to the vCPU thread
 * (if it is inside, the signal makes the ioctl return EINTR). The vCPU thread must clear
 * `immediate_exit` after `KVM_RUN` returns and before it looks for work. SIGUSR1 is not used:
 * Deno starts its inspector on it.
 *
 * @module
 */

import { libc } from "./_libc.ts";
import { installNoopHandler, SIGUSR2 } from "./signal_relay.ts";
import type { Vcpu } from "./vcpu.ts";

/** `SIGUSR2` on Linux x86-64. */
export const KICK_SIGNAL: number = SIGUSR2;
/** Offset of `immediate_exit` in `struct kvm_run`. */
const IMMEDIATE_EXIT_OFFSET = 1;

/** Everything another thread needs to kick a vCPU; plain data, so it can be posted to a Worker. */
export interface VcpuKickTarget {
  /** Process id. */
  readonly pid: number;
  /** Id of the thread that runs the vCPU. */
  readonly tid: number;
  /** Host address of the vCPU's `kvm_run` mapping. */
  readonly runAddress: bigint;
}

let kickSignalHandled = false;

/**
 * Installs a no-op handler for the kick signal, once, for the life of the process: without one a
 * kick would end the process. It is never removed, because a kick sent to a thread that is about
 * to leave can be delivered after its sender is done with it, and by then the default action would
 * kill the process (QEMU keeps its SIG_IPI handler for good too). Call it before any kick.
 *
 * @example
 * ```ts
 * import { handleKickSignal } from "./vcpu_kicker.ts";
 * handleKickSignal();
 * ```
 */
export function handleKickSignal(): void {
  if (kickSignalHandled) return;
  kickSignalHandled = true;
  installNoopHandler(KICK_SIGNAL);
}

/** The calling thread's process and thread ids (for a kicker aimed at this thread). */
export function currentThread(): { pid: number; tid: number } {
  const { getpid, gettid } = libc();
  return { pid: getpid(), tid: gettid() };
}

/**
 * Describes `vcpu` for a kicker. Call it on the thread that will run the vCPU. The process must
 * handle SIGUSR2 (the front-end registers a listener), or the signal would end it.
 */
export function vcpuKickTarget(vcpu: Vcpu): VcpuKickTarget {
  return { ...currentThread(), runAddress: vcpu.runAddress };
}

/** The address of the target vCPU's `kvm_run.immediate_exit` byte (what a kick sets first). */
export function immediateExitAddress(target: VcpuKickTarget): bigint {
  return target.runAddress + BigInt(IMMEDIATE_EXIT_OFFSET);
}

/**
 * Kicks one vCPU from any thread.
 *
 * @example
 * ```ts ignore
 * // on the vCPU thread
 * const target = vcpuKickTarget(vcpu);
 * worker.postMessage(target);
 * // on the other thread
 * const kicker = new VcpuKicker(target);
 * kicker.kick();
 * ```
 */
export class VcpuKicker {
  readonly #target: VcpuKickTarget;
  readonly #flag: Uint8Array;

  /**
   * A kicker for the vCPU and thread `target` describes (from {@link vcpuKickTarget}).
   *
   * @throws {TypeError} when `target.runAddress` is 0.
   */
  constructor(target: VcpuKickTarget) {
    this.#target = target;
    const pointer = Deno.UnsafePointer.create(target.runAddress);
    if (pointer === null) throw new TypeError("VcpuKicker: the kvm_run address is null");
    this.#flag = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, IMMEDIATE_EXIT_OFFSET + 1));
  }

  /**
   * Makes the vCPU's current or next `KVM_RUN` return. Only valid while the vCPU exists: the owner
   * must stop every kicker before closing the vCPU (its mapping goes away with it).
   */
  kick(): void {
    this.#flag[IMMEDIATE_EXIT_OFFSET] = 1;
    libc().tgkill(this.#target.pid, this.#target.tid, KICK_SIGNAL);
  }
}
