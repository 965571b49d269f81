/**
 * `poll(2)` for readability, for a Worker that waits on host fds (a tap's receive queue) on behalf
 * of the VM thread, which cannot block on them while it is inside `KVM_RUN`.
 *
 * @module
 */

import { EINTR } from "./_errno.ts";
import { lastErrno, libc } from "./_libc.ts";
import { KvmError } from "./kvm_error.ts";

/** `POLLIN`: data to read. */
export const POLLIN = 0x001;
/** `POLLERR`: an error condition (always reported). */
export const POLLERR = 0x008;
/** `POLLHUP`: hung up (always reported). */
export const POLLHUP = 0x010;
/** `POLLNVAL`: the fd is not open (always reported). */
export const POLLNVAL = 0x020;
/** Bytes of one `struct pollfd` (int fd; short events; short revents). */
const POLLFD_SIZE = 8;

/**
 * Waits up to `timeoutMs` (−1: for ever, 0: not at all) until one of `fds` is readable, and returns
 * the ones that are — or have an error, hang-up or are closed, so that the caller's read reports
 * it. An empty result is a timeout or a signal (EINTR): callers loop. Blocks the calling thread.
 *
 * @throws {KvmError} with op `"poll"` for any other failure (EINVAL: too many fds; ENOMEM).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventFd } from "./event_fd.ts";
 * import { pollReadable } from "./poll.ts";
 * using event = new EventFd();
 * assert.deepEqual(pollReadable([event.fd], 0), []);
 * event.write();
 * assert.deepEqual(pollReadable([event.fd], 1000), [event.fd]);
 * ```
 */
export function pollReadable(fds: readonly number[], timeoutMs: number): number[] {
  const buffer = new Uint8Array(POLLFD_SIZE * fds.length);
  const view = new DataView(buffer.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(POLLFD_SIZE * i, fd, true);
    view.setInt16(POLLFD_SIZE * i + 4, POLLIN, true);
  });
  const result = libc().poll(buffer, BigInt(fds.length), Math.trunc(timeoutMs));
  if (result < 0) {
    const errno = lastErrno();
    if (errno === EINTR) return [];
    throw new KvmError("poll", errno, { detail: `${fds.length} fds` });
  }
  if (result === 0) return [];
  return fds.filter((_, i) => view.getInt16(POLLFD_SIZE * i + 6, true) !== 0);
}

/**
 * A fixed set of `poll(2)` slots for a thread that waits on the same fds again and again (the VM
 * thread between exits): the `struct pollfd` array is made once, and a slot is left out of a wait
 * by giving it a negative fd (poll ignores those), so a wait allocates nothing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventFd } from "./event_fd.ts";
 * import { PollSet } from "./poll.ts";
 * using a = new EventFd();
 * using b = new EventFd();
 * const set = new PollSet(2);
 * set.setFd(0, a.fd);
 * set.setFd(1, b.fd);
 * b.write();
 * assert.equal(set.wait(1000), 1);
 * assert.deepEqual([set.readable(0), set.readable(1)], [false, true]);
 * set.setFd(1, -1); // left out: a readable fd no longer ends the wait
 * assert.equal(set.wait(0), 0);
 * ```
 */
export class PollSet {
  readonly #buffer: Uint8Array;
  readonly #view: DataView;
  readonly #count: number;

  /** `count` slots, each with fd −1 (left out) until {@link setFd}. */
  constructor(count: number) {
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError(`PollSet: count must be ≥ 1, got ${count}`);
    }
    this.#count = count;
    this.#buffer = new Uint8Array(POLLFD_SIZE * count);
    this.#view = new DataView(this.#buffer.buffer);
    for (let i = 0; i < count; i++) {
      this.#view.setInt32(POLLFD_SIZE * i, -1, true);
      this.#view.setInt16(POLLFD_SIZE * i + 4, POLLIN, true);
    }
  }

  /** How many slots. */
  get count(): number {
    return this.#count;
  }

  /** Slot `i` waits on `fd` from the next {@link wait} on; a negative fd leaves the slot out. */
  setFd(i: number, fd: number): void {
    this.#view.setInt32(POLLFD_SIZE * this.#slot(i), fd, true);
  }

  /**
   * Waits up to `timeoutMs` (−1: for ever) until a slot's fd is readable (or has an error or
   * hang-up); returns how many are, 0 on a timeout or a signal (EINTR). Blocks the calling thread.
   *
   * @throws {KvmError} with op `"poll"` for any other failure.
   */
  wait(timeoutMs: number): number {
    const result = libc().poll(this.#buffer, BigInt(this.#count), Math.trunc(timeoutMs));
    if (result >= 0) return result;
    const errno = lastErrno();
    if (errno === EINTR) {
      for (let i = 0; i < this.#count; i++) this.#view.setInt16(POLLFD_SIZE * i + 6, 0, true);
      return 0;
    }
    throw new KvmError("poll", errno, { detail: `${this.#count} fds` });
  }

  /** Whether slot `i` was readable (or had an error or hang-up) at the last {@link wait}. */
  readable(i: number): boolean {
    return this.#view.getInt16(POLLFD_SIZE * this.#slot(i) + 6, true) !== 0;
  }

  #slot(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.#count) {
      throw new RangeError(`PollSet: slot ${i} is not in [0, ${this.#count})`);
    }
    return i;
  }
}
