/**
 * The VM thread's timers ({@link DeviceTimers} for the device models, and the machine's own, such
 * as the rounds of a network self-announcement): a list of deadlines run from the runner's kick
 * hook, and one host timer armed for the earliest, whose signal breaks the VM thread out of
 * `KVM_RUN` or its poll(2) (kvm/host_timer.ts: it repeats until armed again, so a wake-up that
 * comes just before the thread waits is not lost).
 *
 * The deadlines are on a clock that stands still while the machine is paused ({@link
 * VmTimers.paused}: a monitor `stop`, a snapshot being written), as QEMU's virtual clock: a wait of
 * 100 ms is 100 ms of running machine, and no host timer is armed while it is stopped.
 *
 * @module
 */

import type { DeviceTimers } from "../devices/device_timers.ts";

interface Deadline {
  readonly at: number;
  readonly fn: () => void;
}

/**
 * Deadlines in the order they fall due.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VmTimers } from "./vm_timers.ts";
 * let now = 0;
 * const armed: (number | null)[] = [];
 * const timers = new VmTimers((ms) => void armed.push(ms), () => now);
 * const ran: string[] = [];
 * timers.after(50, () => ran.push("b"));
 * const cancel = timers.after(10, () => ran.push("never"));
 * timers.after(20, () => ran.push("a"));
 * cancel();
 * now = 30;
 * assert.equal(timers.runDue(), 1);
 * assert.deepEqual(ran, ["a"]);
 * assert.deepEqual(armed, [50, 10, 10, 20, 20]); // re-armed for the earliest each time
 * // Paused for 100 ms: nothing is armed meanwhile, and "b" is still 20 ms of running away.
 * timers.paused(() => now = 130);
 * assert.deepEqual(armed.slice(5), [null, 20]);
 * ```
 */
export class VmTimers implements DeviceTimers {
  #pending: Deadline[] = [];
  readonly #arm: (delayMs: number | null) => void;
  readonly #host: () => number;
  /** Host milliseconds the machine has spent paused, and when the current pause began. */
  #pausedMs = 0;
  #pausedAt = 0;
  #depth = 0;

  /**
   * `arm(ms)` is asked to wake the thread in `ms` milliseconds (null: nothing to wake for); `now`
   * is the host's clock in milliseconds.
   */
  constructor(arm: (delayMs: number | null) => void, now: () => number = () => performance.now()) {
    this.#arm = arm;
    this.#host = now;
  }

  /** Deadlines not yet run. */
  get size(): number {
    return this.#pending.length;
  }

  /**
   * Runs `fn` once `ms` milliseconds of running machine have passed, at the next {@link runDue}
   * after that.
   *
   * @throws the error of the host timer's arming (nothing is scheduled then).
   */
  after(ms: number, fn: () => void): () => void {
    const entry: Deadline = { at: this.#now() + Math.max(0, ms), fn };
    const i = this.#pending.findIndex((d) => d.at > entry.at);
    if (i < 0) this.#pending.push(entry);
    else this.#pending.splice(i, 0, entry);
    try {
      this.#rearm();
    } catch (error) {
      this.#pending.splice(this.#pending.indexOf(entry), 1);
      throw error;
    }
    return () => {
      const at = this.#pending.indexOf(entry);
      if (at < 0) return;
      this.#pending.splice(at, 1);
      this.#rearm();
    };
  }

  /** Runs every deadline that has come, in order (each may schedule more); how many ran. */
  runDue(): number {
    if (this.#pending.length === 0 || this.#depth > 0) return 0;
    const now = this.#now();
    let ran = 0;
    while (this.#pending.length > 0 && this.#pending[0].at <= now) {
      const entry = this.#pending.shift()!;
      ran++;
      entry.fn();
    }
    if (ran > 0) this.#rearm();
    return ran;
  }

  /**
   * Runs `fn` with the clock stopped (calls nest): no deadline falls due meanwhile, and the host
   * timer is disarmed until the outermost call returns.
   */
  paused<T>(fn: () => T): T {
    if (this.#depth++ === 0) {
      this.#pausedAt = this.#host();
      if (this.#pending.length > 0) this.#arm(null);
    }
    try {
      return fn();
    } finally {
      if (--this.#depth === 0) {
        this.#pausedMs += this.#host() - this.#pausedAt;
        if (this.#pending.length > 0) this.#rearm();
      }
    }
  }

  /** Drops every deadline. */
  clear(): void {
    this.#pending = [];
    this.#arm(null);
  }

  /** The clock: host time less the time spent paused (standing still during a pause). */
  #now(): number {
    return (this.#depth > 0 ? this.#pausedAt : this.#host()) - this.#pausedMs;
  }

  #rearm(): void {
    const first = this.#pending[0];
    if (this.#depth > 0) return; // armed again when the pause ends
    this.#arm(first === undefined ? null : Math.max(0, first.at - this.#now()));
  }
}
