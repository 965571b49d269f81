/**
 * The shared cells between the VM thread and the vCPU Workers of an SMP run (one Int32Array over a
 * SharedArrayBuffer). The VM thread sleeps on the doorbell; a Worker with an I/O or MMIO exit marks
 * its vCPU EXIT_PENDING, rings the doorbell and sleeps on its own state cell until the VM thread,
 * having served the exit from the vCPU's run page, marks it RUNNING again.
 *
 * Both sides of the protocol are plain functions over the cells — {@link runVcpuThread} here (the
 * Worker's loop) and `servePendingExits` in `smp_runner.ts` (the VM thread's pass) — so that they
 * are tested against hand-built run pages without KVM.
 *
 * @module
 */

import { type ExtIntSource, type ExtIntTarget, offerExtInt } from "./ext_int.ts";
import { ringDoorbell as ring } from "../kvm/doorbell.ts";
import {
  KVM_EXIT_DEBUG,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IOAPIC_EOI,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_MMIO,
} from "../kvm/ioctls.ts";

/** Bumped by anyone with news for the VM thread (vCPU Workers, the QMP, gdb and web Workers). */
export const DOORBELL = 0;
/** Set by the VM thread when the run is over: Workers leave their loop. */
export const STOP = 1;
/** Set by the VM thread to hold every vCPU out of KVM_RUN (to read registers); Workers wait on it. */
export const PAUSE = 2;
/** Set by the VM thread while it waits in poll(2): a ring then writes the doorbell's eventfd. */
export const WAITING = 3;
/** The doorbell's eventfd (its fd number), for the vCPU threads' rings. */
export const WAKE_FD = 4;
/**
 * Set by the VM thread before the run when the PIC is its own (a split irqchip): vCPU 0 then takes
 * the PIC's interrupts (ExtINT) from it, see {@link EXTINT}.
 */
export const SPLIT_IRQCHIP = 5;
/**
 * A split irqchip's PIC INT line as the VM thread last saw it (1 high): while it is high, vCPU 0
 * asks for the vector (INTA_PENDING) whenever KVM says it can take one, and for the interrupt
 * window otherwise. The VM thread kicks vCPU 0 when it rises.
 */
export const EXTINT = 6;
/** The VM thread's answer to INTA_PENDING: the vector for `injectExtInt`, or -1 (INT fell meanwhile). */
export const EXTINT_VECTOR = 7;
/** First per-vCPU cell. */
const FIRST_VCPU = 8;
/** Exit-reason counters per vCPU: `KVM_EXIT_*` values are below this (the low bits index them). */
export const EXIT_REASON_SLOTS = 64;
/** Cells per vCPU: state, thread id, then a counter per exit reason (written by its thread only). */
const PER_VCPU = 2 + EXIT_REASON_SLOTS;

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
/**
 * vCPU 0 can take an external interrupt and the PIC's INT is high: it waits for the VM thread's
 * INTA cycle (the vector in {@link EXTINT_VECTOR}), as QEMU's `kvm_arch_pre_run` acknowledges the
 * PIC under its lock.
 */
export const INTA_PENDING = 6;

/** Index of vCPU `i`'s state cell. */
export function stateCell(i: number): number {
  return FIRST_VCPU + PER_VCPU * i;
}

/** Index of vCPU `i`'s thread-id cell (for kicks). */
export function tidCell(i: number): number {
  return FIRST_VCPU + PER_VCPU * i + 1;
}

/** Index of vCPU `i`'s first exit-reason counter (`KVM_EXIT_*` n is at this + n). */
export function exitCountCell(i: number): number {
  return FIRST_VCPU + PER_VCPU * i + 2;
}

/** A zeroed buffer for `cpus` vCPUs. */
export function smpBuffer(cpus: number): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (FIRST_VCPU + PER_VCPU * cpus));
}

/**
 * What a vCPU thread's loop needs of its vCPU: `KVM_RUN` and the `immediate_exit` flag; with a
 * split irqchip, vCPU 0 also injects the PIC's vectors.
 */
export interface VcpuThreadTarget {
  /** `KVM_RUN`: the exit reason, `KVM_EXIT_INTR` when kicked. */
  run(): number;
  /** Sets or clears `kvm_run.immediate_exit`. */
  setImmediateExit(on: boolean): void;
  /** `kvm_run.ready_for_interrupt_injection` of the last exit (split irqchip). */
  readonly readyForInterruptInjection?: boolean;
  /** `kvm_run.exit_reason` of the last exit (split irqchip). */
  readonly exitReason?: number;
  /** Gives the vCPU an external interrupt where a snapshot sees it (split irqchip). */
  injectExtInt?(vector: number): void;
  /** Sets or clears `kvm_run.request_interrupt_window` (split irqchip). */
  setRequestInterruptWindow?(on: boolean): void;
}

/** Bumps the doorbell and wakes the VM thread (kvm/doorbell.ts: the eventfd if it waits in poll). */
export function ringDoorbell(cells: Int32Array): void {
  ring(cells, DOORBELL, WAITING, Atomics.load(cells, WAKE_FD));
}

/** While PAUSE is set (and not STOP): marks the thread PAUSED, rings, and sleeps; then RUNNING. */
function holdWhilePaused(cells: Int32Array, state: number): void {
  if (Atomics.load(cells, PAUSE) === 0) return;
  Atomics.store(cells, state, PAUSED);
  ringDoorbell(cells);
  while (Atomics.load(cells, PAUSE) !== 0 && Atomics.load(cells, STOP) === 0) {
    Atomics.wait(cells, PAUSE, 1, 100);
  }
  Atomics.store(cells, state, RUNNING);
}

/** Sleeps while this vCPU's state cell holds `waiting` (the VM thread answers and notifies). */
function awaitAnswer(cells: Int32Array, state: number, waiting: number): void {
  Atomics.store(cells, state, waiting);
  ringDoorbell(cells);
  while (Atomics.load(cells, state) === waiting) Atomics.wait(cells, state, waiting);
}

/**
 * The PIC's INT line as vCPU thread `state`'s cell sees it: the VM thread raises EXTINT, and the
 * INTA cycle is a question to the VM thread, whose PIC answers the vector.
 */
function extIntCells(cells: Int32Array, state: number): ExtIntSource {
  return {
    get pending() {
      return Atomics.load(cells, EXTINT) !== 0;
    },
    acknowledge() {
      awaitAnswer(cells, state, INTA_PENDING);
      return Atomics.load(cells, EXTINT_VECTOR);
    },
  };
}

/**
 * The loop of vCPU thread `index`: `open()` the vCPU, then `KVM_RUN` until STOP. A kick looks at
 * STOP and PAUSE; an I/O or MMIO exit is marked EXIT_PENDING, the doorbell rung, and the thread
 * sleeps until the VM thread has served it and marked it RUNNING; any other exit marks it STOPPED
 * (the VM thread reads why from the run page). A throw marks it FAILED. Returns the failure's
 * message, if any; the state is DONE if the loop left while RUNNING.
 */
export function runVcpuThread(
  cells: Int32Array,
  index: number,
  open: () => VcpuThreadTarget,
): string | undefined {
  const state = stateCell(index);
  const counts = exitCountCell(index);
  let failure: string | undefined;
  try {
    const vcpu = open();
    const takesExtInt = index === 0 && Atomics.load(cells, SPLIT_IRQCHIP) !== 0;
    if (takesExtInt && (!vcpu.injectExtInt || !vcpu.setRequestInterruptWindow)) {
      throw new TypeError("vCPU 0 of a split irqchip needs injectExtInt and the interrupt window");
    }
    let window = false;
    const pic = extIntCells(cells, state);
    // A run that starts held (-S) has PAUSE set before this thread exists: no guest instruction.
    holdWhilePaused(cells, state);
    while (Atomics.load(cells, STOP) === 0) {
      if (takesExtInt) window = offerExtInt(pic, vcpu as ExtIntTarget, window);
      const reason = vcpu.run();
      cells[counts + (reason & (EXIT_REASON_SLOTS - 1))]++; // this thread is the only writer
      if (reason === KVM_EXIT_INTR) {
        vcpu.setImmediateExit(false); // a kick: look at STOP and PAUSE, then run on
        holdWhilePaused(cells, state);
        continue;
      }
      if (reason === KVM_EXIT_IRQ_WINDOW_OPEN && takesExtInt) continue; // offerExtInt gives the vector
      // A debug exit waits for the VM thread like I/O: a debugger looks at the stopped vCPU there;
      // so does a split irqchip's EOI, which the VM thread's IOAPIC takes.
      if (
        reason === KVM_EXIT_IO || reason === KVM_EXIT_MMIO || reason === KVM_EXIT_DEBUG ||
        reason === KVM_EXIT_IOAPIC_EOI
      ) {
        awaitAnswer(cells, state, EXIT_PENDING);
        continue;
      }
      Atomics.store(cells, state, STOPPED);
      ringDoorbell(cells);
      break;
    }
  } catch (e) {
    failure = e instanceof Error ? e.message : String(e);
    Atomics.store(cells, state, FAILED);
    ringDoorbell(cells);
  }
  if (Atomics.load(cells, state) === RUNNING) Atomics.store(cells, state, DONE);
  return failure;
}
