/**
 * Coalesced MMIO and port I/O: writes an accelerator may queue instead of exiting for each one
 * (QEMU's `memory_region_add_coalescing`, KVM's coalesced MMIO ring), and the flush that plays
 * them back before anything could observe the difference.
 *
 * The memory API only keeps the ranges and tells listeners where they sit in each address space
 * (`coalescedIoAdd` / `coalescedIoDel`); an accelerator registers them with the kernel and
 * installs a flusher here. As in QEMU, the queue is flushed when a transaction begins, when
 * coalescing is cleared, and before any access to a region whose `flushCoalesced` flag is set
 * (every coalesced region has it; a device sets it on the registers whose reads or writes must
 * see the queued writes first — the PCI host's data port behind its coalesced address port).
 *
 * @module
 */

/** A range of a region whose writes may be coalesced, relative to the region. */
export interface CoalescedRange {
  /** Offset in the region. */
  readonly offset: bigint;
  /** Size in bytes (> 0). */
  readonly size: bigint;
}

const flushers: (() => void)[] = [];
let flushing = false;

/**
 * Installs `flush`, which plays back the writes an accelerator queued (QEMU's
 * `qemu_flush_coalesced_mmio_buffer` calls KVM's). Several may be installed (one per VM in the
 * process); each flush runs them all. Dispose the result to remove it.
 *
 * @throws {TypeError} if `flush` is not a function.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { beginTransaction, commitTransaction, registerCoalescedFlusher } from "./mod.ts";
 * let flushes = 0;
 * using _flusher = registerCoalescedFlusher(() => void flushes++);
 * beginTransaction(); // every transaction first plays back what was queued
 * commitTransaction();
 * assert.equal(flushes, 1);
 * ```
 */
export function registerCoalescedFlusher(flush: () => void): Disposable {
  if (typeof flush !== "function") {
    throw new TypeError(`registerCoalescedFlusher: expected a function, got ${typeof flush}`);
  }
  flushers.push(flush);
  return {
    [Symbol.dispose]: () => {
      const i = flushers.indexOf(flush);
      if (i >= 0) flushers.splice(i, 1);
    },
  };
}

/**
 * Plays back every queued write through the installed flushers. A flush that re-enters (a queued
 * write lands on a region that asks for a flush) returns at once, as QEMU's KVM flush does with
 * its `coalesced_flush_in_progress`. An error of a flusher propagates after the others ran.
 *
 * @throws The first error a flusher threw.
 */
export function flushCoalescedMmio(): void {
  if (flushing || flushers.length === 0) return;
  flushing = true;
  let failed = false;
  let error: unknown;
  try {
    for (const flush of flushers.slice()) {
      try {
        flush();
      } catch (e) {
        if (!failed) [failed, error] = [true, e];
      }
    }
  } finally {
    flushing = false;
  }
  if (failed) throw error;
}

/** Tells the address spaces' listeners of a range added to or removed from a region. */
type CoalescedHook = (region: object, range: CoalescedRange, add: boolean) => void;

let notify: CoalescedHook = () => {};

/** Installs the function that notifies listeners (`address_space.ts`). Internal to `memory/`. */
export function _setCoalescedHook(hook: CoalescedHook): void {
  notify = hook;
}

/** Calls the installed hook. Internal to `memory/`. */
export function _notifyCoalesced(region: object, range: CoalescedRange, add: boolean): void {
  notify(region, range, add);
}
