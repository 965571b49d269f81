/**
 * Timers a device model may ask its machine for (QEMU's `timer_new_ms` + `timer_mod`): run `fn` on
 * the machine's thread after a delay. The models stay pure — the machine decides how it waits
 * (machine/vm_timers.ts: a host timer that interrupts the VM thread) — and a machine may stop the
 * clock while it is paused, as QEMU's virtual clock stops.
 *
 * @module
 */

/** Where a device schedules work for later. */
export interface DeviceTimers {
  /**
   * Runs `fn` once, on the machine's thread, `ms` milliseconds from now (or later, never earlier);
   * the returned function cancels it if it has not run.
   */
  after(ms: number, fn: () => void): () => void;
}
