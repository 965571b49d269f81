/**
 * The split irqchip's one rule before vCPU 0's `KVM_RUN` (QEMU's `kvm_arch_pre_run`), shared by the
 * one-vCPU runner and the vCPU threads of the threaded one: while the PIC's INT is high, give the
 * vCPU its vector (`KVM_INTERRUPT`) once KVM says it can take one, and ask for the interrupt window
 * until then — but not while a kick is pending (`immediate_exit` set): that `KVM_RUN` returns before
 * entering the guest, and a vector given now would wait in KVM's `pending_external_vector`, which
 * `KVM_GET_VCPU_EVENTS` does not report. A snapshot taken in that kick lost it: the PIC had
 * acknowledged it, the vCPU never saw it, and a restored guest halted for ever waiting (seen once,
 * the built-in guest's UART interrupt, split irqchip, in the nested VM).
 *
 * @module
 */

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
  /** Whether `kvm_run.immediate_exit` is set (a kick is pending). */
  readonly immediateExit?: boolean;
  /** `KVM_INTERRUPT`. */
  interrupt(vector: number): void;
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
 *   interrupt: (v: number) => void calls.push(`int ${v}`),
 *   setRequestInterruptWindow: (on: boolean) => void calls.push(`window ${on}`),
 * };
 * assert.equal(offerExtInt(pic, vcpu, false), true); // not ready: ask for the window
 * vcpu.readyForInterruptInjection = true;
 * assert.equal(offerExtInt(pic, vcpu, true), false); // ready: the vector goes in, the window off
 * assert.deepEqual(calls, ["window true", "int 32", "window false"]);
 * // A kick pending: KVM_RUN will not enter the guest, so the vector waits in the PIC.
 * high = true;
 * const kicked = { ...vcpu, immediateExit: true };
 * calls.length = 0;
 * assert.equal(offerExtInt(pic, kicked, false), true);
 * assert.deepEqual(calls, ["window true"]);
 * ```
 */
export function offerExtInt(source: ExtIntSource, vcpu: ExtIntTarget, window: boolean): boolean {
  if (source.pending && vcpu.readyForInterruptInjection && !vcpu.immediateExit) {
    const vector = source.acknowledge();
    if (vector >= 0) vcpu.interrupt(vector);
  }
  const want = source.pending;
  if (want !== window) vcpu.setRequestInterruptWindow(want);
  return want;
}
