/**
 * The shared cells between the VM thread and the vCPU Workers of an SMP run (one Int32Array over a
 * SharedArrayBuffer). The VM thread sleeps on the doorbell; a Worker with an I/O or MMIO exit marks
 * its vCPU EXIT_PENDING, rings the doorbell and sleeps on its own state cell until the VM thread,
 * having served the exit from the vCPU's run page, marks it RUNNING again.
 *
 * @module
 */

/** Bumped by anyone with news for the VM thread (vCPU Workers, the console Worker). */
export const DOORBELL = 0;
/** Set by the VM thread when the run is over: Workers leave their loop. */
export const STOP = 1;
/** Set by the VM thread to hold every vCPU out of KVM_RUN (to read registers); Workers wait on it. */
export const PAUSE = 2;
/** First per-vCPU cell. */
const FIRST_VCPU = 8;
/** Cells per vCPU: state, thread id. */
const PER_VCPU = 2;

/** The vCPU is inside KVM_RUN or about to be. */
export const RUNNING = 0;
/** Its last exit (port I/O or MMIO) waits for the VM thread. */
export const EXIT_PENDING = 1;
/** It stopped on an exit that ends the run; the VM thread reads why from its run page. */
export const STOPPED = 2;
/** Its thread failed (an ioctl error); the details follow as a message. */
export const FAILED = 3;
/** Its Worker left the loop. */
export const DONE = 4;
/** It is held out of KVM_RUN while PAUSE is set. */
export const PAUSED = 5;

/** Index of vCPU `i`'s state cell. */
export function stateCell(i: number): number {
  return FIRST_VCPU + PER_VCPU * i;
}

/** Index of vCPU `i`'s thread-id cell (for kicks). */
export function tidCell(i: number): number {
  return FIRST_VCPU + PER_VCPU * i + 1;
}

/** A zeroed buffer for `cpus` vCPUs. */
export function smpBuffer(cpus: number): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (FIRST_VCPU + PER_VCPU * cpus));
}
