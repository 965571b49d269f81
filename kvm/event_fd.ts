/**
 * `eventfd(2)`: a 64-bit counter in the kernel behind an fd. KVM signals one when the guest writes
 * an ioeventfd'd address and injects an interrupt when one attached with KVM_IRQFD is written.
 *
 * @module
 */

import { EAGAIN } from "./_errno.ts";
import { lastErrno, libc } from "./_libc.ts";
import { closeFd, retryOnEintr } from "./_syscalls.ts";
import { KvmError } from "./kvm_error.ts";

/** `EFD_SEMAPHORE` (sys/eventfd.h): each read takes 1 from the counter instead of all of it. */
export const EFD_SEMAPHORE = 0o1;
/** `EFD_NONBLOCK` (= O_NONBLOCK): a read of a zero counter returns EAGAIN instead of sleeping. */
export const EFD_NONBLOCK = 0o4_000;
/** `EFD_CLOEXEC` (= O_CLOEXEC): always set, so the fd never leaks into QEMU or other children. */
export const EFD_CLOEXEC = 0o2_000_000;

/** The counter's largest value, 2^64 − 2: a write that would pass it waits or fails with EAGAIN. */
export const EVENTFD_MAX = 0xffff_ffff_ffff_fffen;

/** Bytes of every eventfd read and write: one native-endian u64. */
const COUNTER_SIZE = 8;
/** The same as the `size_t` FFI parameters take it. */
const COUNTER_BYTES = BigInt(COUNTER_SIZE);

/** Options of the {@link EventFd} constructor. */
export interface EventFdOptions {
  /** The counter's first value; 0 by default. */
  readonly initial?: number;
  /**
   * `EFD_NONBLOCK` (the default, `true`): {@link EventFd.read} of a zero counter returns 0n at
   * once. `false` makes it sleep until the counter is non-zero, blocking the calling thread.
   */
  readonly nonBlocking?: boolean;
  /** `EFD_SEMAPHORE`: each read returns 1 and decrements the counter. */
  readonly semaphore?: boolean;
}

/**
 * An eventfd owned by this object, opened close-on-exec. {@link EventFd.write} adds to the counter
 * (waking readers and, when KVM holds it as an irqfd, injecting the interrupt);
 * {@link EventFd.read} takes the counter and resets it. {@link EventFd.close} is idempotent and
 * `using` works. The fd is process-wide: a Worker may read it by number.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventFd } from "./event_fd.ts";
 * using event = new EventFd();
 * assert.equal(event.read(), 0n); // nothing yet: non-blocking by default
 * event.write();
 * event.write(2n);
 * assert.equal(event.read(), 3n);
 * assert.equal(event.read(), 0n);
 * ```
 */
export class EventFd implements Disposable {
  #fd: number;
  // Every read and write moves 8 bytes; one buffer per eventfd avoids an allocation per call.
  readonly #counter = new Uint8Array(COUNTER_SIZE);
  readonly #view = new DataView(this.#counter.buffer);

  /**
   * `eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK…)`.
   *
   * @throws {RangeError} when `initial` is not an integer in [0, 2^32).
   * @throws {KvmError} with op `"eventfd"` when the kernel refuses (EMFILE, ENFILE, ENOMEM).
   */
  constructor(options: EventFdOptions = {}) {
    const initial = options.initial ?? 0;
    if (!Number.isInteger(initial) || initial < 0 || initial > 0xffff_ffff) {
      throw new RangeError(`EventFd: initial must be an integer in [0, 2^32), got ${initial}`);
    }
    const flags = EFD_CLOEXEC | ((options.nonBlocking ?? true) ? EFD_NONBLOCK : 0) |
      (options.semaphore ? EFD_SEMAPHORE : 0);
    const fd = libc().eventfd(initial, flags);
    if (fd < 0) throw new KvmError("eventfd", lastErrno());
    this.#fd = fd;
  }

  /** The fd, for KVM_IRQFD, KVM_IOEVENTFD or a poll loop (-1 after close). */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@link EventFd.close} has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Adds `value` (default 1) to the counter.
   *
   * @throws {RangeError} when `value` is not in [1, 2^64 − 2].
   * @throws {KvmError} with op `"write eventfd"`: EAGAIN when the counter would pass
   * {@link EVENTFD_MAX} (non-blocking).
   */
  write(value: number | bigint = 1n): void {
    const amount = BigInt(value);
    if (amount < 1n || amount > EVENTFD_MAX) {
      throw new RangeError(`EventFd.write: value must be in [1, 2^64 - 2], got ${amount}`);
    }
    const fd = this.#open();
    this.#view.setBigUint64(0, amount, true);
    const result = retryOnEintr(() => libc().write(fd, this.#counter, COUNTER_BYTES));
    if (result < 0) throw new KvmError("write eventfd", -result, { detail: `fd ${fd}` });
  }

  /**
   * Takes the counter: returns its value and resets it to 0 (in semaphore mode returns 1 and
   * decrements it). Returns 0n when the counter is 0 and the eventfd is non-blocking.
   *
   * @throws {KvmError} with op `"read eventfd"` for any failure other than EAGAIN.
   */
  read(): bigint {
    const fd = this.#open();
    const result = retryOnEintr(() => libc().read(fd, this.#counter, COUNTER_BYTES));
    if (result === -EAGAIN) return 0n;
    if (result < 0) throw new KvmError("read eventfd", -result, { detail: `fd ${fd}` });
    return this.#view.getBigUint64(0, true);
  }

  /** Closes the fd. Idempotent. Detach it from KVM (irqfd, ioeventfd) first, or close the VM. */
  close(): void {
    const fd = this.#fd;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Same as {@link EventFd.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(): number {
    if (this.#fd < 0) throw new Deno.errors.BadResource("the EventFd was used after close()");
    return this.#fd;
  }
}
