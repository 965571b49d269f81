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
