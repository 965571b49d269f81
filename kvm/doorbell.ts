/**
 * A doorbell: how other threads wake the thread that serves a machine's devices (the VM thread of
 * a run whose vCPUs have threads of their own). That thread waits in `poll(2)` — on the queue
 * notify eventfds KVM signals, the taps, and this doorbell's eventfd — so that a guest's notify
 * wakes it directly, as QEMU's main loop wakes from `ppoll` on its ioeventfds.
 *
 * A ring bumps a counter cell (an `Atomics.wait` on it wakes too) and writes the eventfd only while
 * the owner says it waits in poll (its `waiting` cell), as QEMU's `aio_notify` writes its
 * `EventNotifier` only when `notify_me` is set: most rings — a vCPU thread's exit while the owner is
 * busy serving — then cost no system call. No ring is lost, because both sides use sequentially
 * consistent atomics in the opposite order (a Dekker pair): the owner reads the counter, serves,
 * sets `waiting`, then reads the counter again and polls only if it did not move; a ringer bumps
 * the counter, then reads `waiting`. Either the owner sees the bump (and does not sleep) or the
 * ringer sees `waiting` (and the eventfd write ends the poll).
 *
 * @module
 */

import { EAGAIN } from "./_errno.ts";
import { libc } from "./_libc.ts";
import { retryOnEintr } from "./_syscalls.ts";
import { EventFd } from "./event_fd.ts";
import { KvmError } from "./kvm_error.ts";
import type { PollSet } from "./poll.ts";
import { VcpuKicker, type VcpuKickTarget } from "./vcpu_kicker.ts";

/** Where another thread rings; plain data, so that it can be posted to a Worker. */
export interface Doorbell {
  /** The shared cells. */
  readonly buffer: SharedArrayBuffer;
  /** Index of the counter cell in an Int32Array over `buffer`. */
  readonly index: number;
  /** Index of the cell the owner sets while it waits in poll(2) (then rings write the eventfd). */
  readonly waitingIndex: number;
  /** The eventfd the owner polls. */
  readonly eventfd: number;
}

/** Bytes of an eventfd write: one native-endian u64. */
const COUNTER_BYTES = 8;
/** One buffer holding the value 1, per isolate: a ring allocates nothing. */
const ONE = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);

/**
 * Rings the doorbell at `index` of `cells` (see the module's comment): bumps the counter, wakes an
 * `Atomics.wait` on it, and writes 1 to `eventfd` if the owner waits in poll.
 *
 * @throws {KvmError} with op `"write eventfd"` when the eventfd write fails (EBADF: it was closed
 * while a thread could still ring; callers fence their rings before the owner closes it).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ringDoorbell } from "./doorbell.ts";
 * import { EventFd } from "./event_fd.ts";
 * using event = new EventFd();
 * const cells = new Int32Array(new SharedArrayBuffer(8));
 * ringDoorbell(cells, 0, 1, event.fd); // the owner does not wait in poll: no write
 * assert.equal(cells[0], 1);
 * assert.equal(event.read(), 0n);
 * cells[1] = 1;
 * ringDoorbell(cells, 0, 1, event.fd);
 * assert.equal(event.read(), 1n);
 * ```
 */
export function ringDoorbell(cells: Int32Array, index: number, waitingIndex: number, eventfd: number): void {
  Atomics.add(cells, index, 1);
  Atomics.notify(cells, index);
  if (Atomics.load(cells, waitingIndex) === 0) return;
  const result = retryOnEintr(() => libc().write(eventfd, ONE, BigInt(COUNTER_BYTES)));
  // EAGAIN: the counter is near 2^64 (never, short of 2^64 rings): it is readable, which is the point.
  if (result < 0 && -result !== EAGAIN) {
    throw new KvmError("write eventfd", -result, { detail: `doorbell fd ${eventfd}` });
  }
}

/**
 * A function that rings `doorbell` (in a Worker: the Int32Array over its cells is made once).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { doorbellRinger } from "./doorbell.ts";
 * const buffer = new SharedArrayBuffer(8);
 * const ring = doorbellRinger({ buffer, index: 0, waitingIndex: 1, eventfd: -1 });
 * ring();
 * ring();
 * assert.equal(new Int32Array(buffer)[0], 2);
 * ```
 */
export function doorbellRinger(doorbell: Doorbell): () => void {
  const cells = new Int32Array(doorbell.buffer);
  const { index, waitingIndex, eventfd } = doorbell;
  return () => ringDoorbell(cells, index, waitingIndex, eventfd);
}

/** How a Worker wakes the VM thread: kick the one vCPU it runs, or ring the SMP runner's doorbell. */
export interface VmWakeTarget {
  /** The vCPU the VM thread runs (a one-vCPU machine): kicked out of `KVM_RUN`. */
  kick?: VcpuKickTarget;
  /** Or the doorbell the VM thread waits on (vCPUs on threads of their own). */
  doorbell?: Doorbell;
}

/**
 * A function that wakes the VM thread through `target` (in a Worker); with neither, it does
 * nothing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { vmWaker } from "./doorbell.ts";
 * const buffer = new SharedArrayBuffer(8);
 * vmWaker({ doorbell: { buffer, index: 0, waitingIndex: 1, eventfd: -1 } })();
 * assert.equal(new Int32Array(buffer)[0], 1);
 * ```
 */
export function vmWaker(target: VmWakeTarget): () => void {
  if (target.kick) {
    const kicker = new VcpuKicker(target.kick);
    return () => kicker.kick();
  }
  return target.doorbell ? doorbellRinger(target.doorbell) : () => {};
}

/**
 * The owner's side of a doorbell: its eventfd, and the wait that cannot miss a ring (see the
 * module's comment). The owner reads {@link counter} before it serves, then calls {@link wait}
 * with that value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DoorbellWait, ringDoorbell } from "./doorbell.ts";
 * import { PollSet } from "./poll.ts";
 * using owner = new DoorbellWait(new SharedArrayBuffer(8), 0, 1);
 * const poll = new PollSet(1);
 * const seen = owner.counter;
 * const { buffer, index, waitingIndex, eventfd } = owner.doorbell;
 * ringDoorbell(new Int32Array(buffer), index, waitingIndex, eventfd); // while the owner serves
 * assert.equal(owner.wait(seen, poll, 60_000), 0); // returns at once: the counter moved
 * assert.equal(owner.timedOut, false);
 * assert.equal(owner.wait(owner.counter, poll, 0), 0);
 * assert.equal(owner.timedOut, true);
 * ```
 */
export class DoorbellWait implements Disposable {
  readonly #cells: Int32Array;
  readonly #index: number;
  readonly #waitingIndex: number;
  readonly #eventfd = new EventFd();
  #timedOut = false;

  /** The owner of the doorbell at cell `index` of `buffer`, with its waiting flag at `waitingIndex`. */
  constructor(buffer: SharedArrayBuffer, index: number, waitingIndex: number) {
    this.#cells = new Int32Array(buffer);
    this.#index = index;
    this.#waitingIndex = waitingIndex;
  }

  /** Where other threads ring (post it to them). */
  get doorbell(): Doorbell {
    return {
      buffer: this.#cells.buffer as SharedArrayBuffer,
      index: this.#index,
      waitingIndex: this.#waitingIndex,
      eventfd: this.#eventfd.fd,
    };
  }

  /** The counter: read it before serving, pass it to {@link wait}. */
  get counter(): number {
    return Atomics.load(this.#cells, this.#index);
  }

  /** Whether the last {@link wait} slept and ended by its timeout (or a signal), not by an fd. */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  /**
   * Waits up to `timeoutMs` in poll(2) on the doorbell's eventfd (slot 0 of `poll`, set here) and
   * the caller's fds (the other slots), unless the counter moved from `seen`: then it only looks
   * at the caller's fds (poll with no wait, skipped when there are none), so a busy ringer cannot
   * starve them. Returns how many of the caller's slots are readable (see `PollSet.readable`).
   */
  wait(seen: number, poll: PollSet, timeoutMs: number): number {
    const cells = this.#cells;
    poll.setFd(0, this.#eventfd.fd);
    Atomics.store(cells, this.#waitingIndex, 1);
    const moved = Atomics.load(cells, this.#index) !== seen;
    const ready = moved && poll.count === 1 ? 0 : poll.wait(moved ? 0 : timeoutMs);
    Atomics.store(cells, this.#waitingIndex, 0);
    this.#timedOut = ready === 0 && !moved;
    if (ready === 0 || !poll.readable(0)) return ready;
    this.#eventfd.read(); // take the rings' writes: the counter says what happened
    return ready - 1;
  }

  /** Closes the eventfd; every ringer must be fenced first. Idempotent. */
  close(): void {
    this.#eventfd.close();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
