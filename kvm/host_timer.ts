/**
 * A one-shot host timer that signals one thread: a POSIX timer (`timer_create` on
 * `CLOCK_MONOTONIC` with `SIGEV_THREAD_ID`). The userspace PIT of a split irqchip arms it for its
 * next output change; the signal breaks the VM thread out of `KVM_RUN` (EINTR), as QEMU's timer
 * thread kicks a vCPU.
 *
 * No thread of its own (a Worker costs an isolate) and no wake-up lost: the timer repeats every
 * `repeatNs` after its first expiry until it is armed again or disarmed, so a signal that came
 * just before the thread entered `KVM_RUN` (and so could not interrupt it) is followed by another.
 *
 * @module
 */

import { lastErrno, libc } from "./_libc.ts";
import { KvmError } from "./kvm_error.ts";

/** `CLOCK_MONOTONIC`. */
const CLOCK_MONOTONIC = 1;
/** `SIGEV_THREAD_ID` (Linux): signal the thread `sigev_notify_thread_id`. */
const SIGEV_THREAD_ID = 4;
/** `struct sigevent` on x86-64: value (8), signo (4), notify (4), then the union (thread id first). */
const SIGEVENT_SIZE = 64;
const SIGEV_SIGNO = 8;
const SIGEV_NOTIFY = 12;
const SIGEV_THREAD_ID_OFFSET = 16;
/** `struct itimerspec`: it_interval {sec, nsec}, it_value {sec, nsec}. */
const ITIMERSPEC_SIZE = 32;
const NS_PER_S = 1_000_000_000;

/** Where a {@link HostTimer} sends its signal. */
export interface HostTimerOptions {
  /** The signal (its handler must be installed, or it ends the process). */
  readonly signal: number;
  /** The thread that gets it (`gettid()`). */
  readonly tid: number;
  /** After the first expiry, the timer fires again every this many nanoseconds (default 1 ms). */
  readonly repeatNs?: number;
}

/**
 * A POSIX timer signalling one thread.
 *
 * @example
 * ```ts ignore
 * handleKickSignal(); // SIGUSR2 does nothing but interrupt a system call
 * using timer = HostTimer.create({ signal: KICK_SIGNAL, tid: currentThread().tid });
 * timer.armAfter(2_000_000); // in 2 ms, then every 1 ms until armed again or disarmed
 * ```
 */
export class HostTimer implements Disposable {
  /** The kernel's timer id. */
  readonly #id: number;
  readonly #repeatNs: number;
  readonly #spec = new Uint8Array(ITIMERSPEC_SIZE);
  readonly #view = new DataView(this.#spec.buffer);
  #closed = false;

  private constructor(id: number, repeatNs: number) {
    this.#id = id;
    this.#repeatNs = repeatNs;
  }

  /**
   * Creates the timer, disarmed.
   *
   * @throws {RangeError} for a repeat period that is not a positive whole number of nanoseconds.
   * @throws {KvmError} op `timer_create` when the kernel refuses it.
   */
  static create(options: HostTimerOptions): HostTimer {
    const repeatNs = options.repeatNs ?? 1_000_000;
    if (!Number.isSafeInteger(repeatNs) || repeatNs <= 0) {
      throw new RangeError(`HostTimer: repeat period ${repeatNs} ns is not a positive whole number`);
    }
    const event = new Uint8Array(SIGEVENT_SIZE);
    const view = new DataView(event.buffer);
    view.setInt32(SIGEV_SIGNO, options.signal, true);
    view.setInt32(SIGEV_NOTIFY, SIGEV_THREAD_ID, true);
    view.setInt32(SIGEV_THREAD_ID_OFFSET, options.tid, true);
    const id = new Int32Array(1);
    if (libc().timer_create(CLOCK_MONOTONIC, event, new Uint8Array(id.buffer)) !== 0) {
      throw new KvmError("timer_create", lastErrno(), {
        detail: `signal ${options.signal} to thread ${options.tid}`,
      });
    }
    return new HostTimer(id[0], repeatNs);
  }

  /**
   * Arms the timer to fire `ns` nanoseconds from now (at least 1), then every repeat period until
   * it is armed again or {@link disarm}ed.
   */
  armAfter(ns: number): void {
    this.#set(Math.max(1, Math.ceil(ns)), this.#repeatNs);
  }

  /** Stops the timer. */
  disarm(): void {
    this.#set(0, 0);
  }

  #set(valueNs: number, intervalNs: number): void {
    if (this.#closed) throw new Error("HostTimer: closed");
    const v = this.#view;
    v.setBigInt64(0, BigInt(Math.floor(intervalNs / NS_PER_S)), true);
    v.setBigInt64(8, BigInt(intervalNs % NS_PER_S), true);
    v.setBigInt64(16, BigInt(Math.floor(valueNs / NS_PER_S)), true);
    v.setBigInt64(24, BigInt(valueNs % NS_PER_S), true);
    if (libc().timer_settime(this.#id, 0, this.#spec, null) !== 0) {
      throw new KvmError("timer_settime", lastErrno(), { detail: `${valueNs} ns` });
    }
  }

  /** Deletes the timer (idempotent); a signal already sent may still arrive. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().timer_delete(this.#id);
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
