/**
 * The split irqchip's one rule before vCPU 0's `KVM_RUN` (QEMU's `kvm_arch_pre_run`), shared by the
 * one-vCPU runner and the vCPU threads of the threaded one: while the PIC's INT is high, give the
 * vCPU its vector once KVM says it can take one, and ask for the interrupt window until then. The
 * vector goes straight into the vCPU's event state (`Vcpu.injectExtInt`), not through
 * `KVM_INTERRUPT`, whose vector waits where `KVM_GET_VCPU_EVENTS` does not look until KVM enters the
 * guest: a kick that came after the INTA and before that entry made a snapshot lose an interrupt
 * the PIC had put in service, and the restored guest halted for ever (seen in the nested VM, the
 * built-in guest's UART interrupt; tests/snapshot_extint_test.ts makes the kick come there).
 * Not after an I/O or MMIO exit, though: KVM finishes that instruction at the next `KVM_RUN`, and an
 * exception raised then (a guest single-stepping over an `out`) would be delivered in place of an
 * injected interrupt and drop it; the window asked for instead opens right after that entry.
 *
 * @module
 */

import { KVM_EXIT_IO, KVM_EXIT_MMIO } from "../kvm/ioctls.ts";

/** The PIC's INT line as the vCPU's side sees it. */
export interface ExtIntSource {
  /** Whether INT is high. */
  readonly pending: boolean;
  /** The INTA cycle: the vector the PIC answers, or -1 when it has none after all. */
  acknowledge(): number;
}

/** What the rule needs of the vCPU. */
export interface ExtIntTarget {
  /** `kvm_run.ready_for_interrupt_injection` of the last exit. */
  readonly readyForInterruptInjection: boolean;
  /** `kvm_run.exit_reason` of the last exit (an I/O or MMIO exit is finished by the next `KVM_RUN`). */
  readonly exitReason: number;
  /** Gives the vCPU the vector where a snapshot sees it (`Vcpu.injectExtInt`). */
  injectExtInt(vector: number): void;
  /** Sets or clears `kvm_run.request_interrupt_window`. */
  setRequestInterruptWindow(on: boolean): void;
}

/**
 * Applies the rule once; `window` is whether the interrupt window is requested now, and the result
 * whether it is requested afterwards.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { offerExtInt } from "./ext_int.ts";
 * const calls: string[] = [];
 * let high = true;
 * const pic = { get pending() { return high; }, acknowledge: () => (high = false, 0x20) };
 * const vcpu = {
 *   readyForInterruptInjection: false,
 *   exitReason: 0,
 *   injectExtInt: (v: number) => void calls.push(`int ${v}`),
 *   setRequestInterruptWindow: (on: boolean) => void calls.push(`window ${on}`),
 * };
 * assert.equal(offerExtInt(pic, vcpu, false), true); // not ready: ask for the window
 * vcpu.readyForInterruptInjection = true;
 * assert.equal(offerExtInt(pic, vcpu, true), false); // ready: the vector goes in, the window off
 * assert.deepEqual(calls, ["window true", "int 32", "window false"]);
 * ```
 */
export function offerExtInt(source: ExtIntSource, vcpu: ExtIntTarget, window: boolean): boolean {
  const finishing = vcpu.exitReason === KVM_EXIT_IO || vcpu.exitReason === KVM_EXIT_MMIO;
  if (source.pending && vcpu.readyForInterruptInjection && !finishing) {
    const vector = source.acknowledge();
    if (vector >= 0) vcpu.injectExtInt(vector);
  }
  const want = source.pending;
  if (want !== window) vcpu.setRequestInterruptWindow(want);
  return want;
}
