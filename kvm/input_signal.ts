/**
 * Input that interrupts `KVM_RUN`: a file descriptor (the console's stdin) put in O_ASYNC mode with
 * one thread — the vCPU's — as its owner and the kick signal as its signal (Linux's F_SETOWN_EX and
 * F_SETSIG). When bytes arrive the kernel signals that thread, its `KVM_RUN` returns EINTR, and the
 * loop reads exactly what FIONREAD says is there: a console with no second thread.
 *
 * @module
 */

import { lastErrno, libc } from "./_libc.ts";
import { KICK_SIGNAL } from "./vcpu_kicker.ts";

const F_GETFL = 3;
const F_SETFL = 4;
const F_SETSIG = 10;
const F_SETOWN_EX = 15;
const F_OWNER_TID = 0;
const O_ASYNC = 0o20000;
const FIONREAD = 0x541b;

/**
 * Signals the calling thread with the kick signal whenever `fd` becomes readable, until closed
 * (which restores the descriptor's flags and owner: it may be the terminal the shell shares).
 *
 * @example
 * ```ts ignore
 * using input = InputSignal.watch(0); // stdin; null where O_ASYNC does not apply
 * // … KVM_RUN returns KVM_EXIT_INTR when a key is pressed …
 * const n = input?.readable() ?? 0;
 * ```
 */
export class InputSignal implements Disposable {
  readonly #fd: number;
  readonly #flags: number;
  readonly #count = new Int32Array(1);
  #closed = false;

  private constructor(fd: number, flags: number) {
    this.#fd = fd;
    this.#flags = flags;
  }

  /** Starts watching `fd` for the calling thread, or returns null where the kernel refuses. */
  static watch(fd: number): InputSignal | null {
    const { fcntl, fcntl_buf, gettid } = libc();
    const flags = fcntl(fd, F_GETFL, 0n);
    if (flags < 0) return null;
    const owner = new Uint8Array(8);
    const view = new DataView(owner.buffer);
    view.setInt32(0, F_OWNER_TID, true); // struct f_owner_ex { int type; pid_t pid; }
    view.setInt32(4, gettid(), true);
    if (fcntl_buf(fd, F_SETOWN_EX, owner) < 0 || fcntl(fd, F_SETSIG, BigInt(KICK_SIGNAL)) < 0) return null;
    if (fcntl(fd, F_SETFL, BigInt(flags | O_ASYNC)) < 0) return null;
    return new InputSignal(fd, flags);
  }

  /** Bytes that can be read now without blocking (0 at end of input too). */
  readable(): number {
    if (this.#closed) return 0;
    if (libc().ioctl_buf(this.#fd, FIONREAD, new Uint8Array(this.#count.buffer)) < 0) {
      void lastErrno();
      return 0;
    }
    return this.#count[0];
  }

  /** Stops the signals and restores the descriptor's flags. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const { fcntl } = libc();
    fcntl(this.#fd, F_SETFL, BigInt(this.#flags & ~O_ASYNC));
    fcntl(this.#fd, F_SETSIG, 0n);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
