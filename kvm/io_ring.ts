/**
 * Disk transfers that need not finish before the caller goes on, through the kernel's `io_uring`:
 * the VM thread prepares a request's iovecs and submits a readv/writev (or an fdatasync, a FLUSH
 * that must not stop the VM thread while the storage writes back); the completion comes back as
 * the ring's fd turning readable, which joins the VM thread's wait. Two ways, as QEMU's `aio=`:
 *
 * - `io_uring` (QEMU's `aio=io_uring`): the kernel decides. Data in the page cache is copied at
 *   once, inside `io_uring_enter`, on the calling thread; a read that must wait for the storage is
 *   handed to a kernel worker, and the VM thread goes on serving other devices.
 * - `workers` (what QEMU's `aio=threads` pool does): every transfer goes to one of io_uring's kernel
 *   workers (`IOSQE_ASYNC`), which does the copy with a blocking readv/writev.
 *
 * The layout of `struct io_uring_params`, `io_uring_sqe` and `io_uring_cqe` is
 * `include/uapi/linux/io_uring.h`'s; see `docs/kvm-abi.md`.
 *
 * @module
 */

import { EINTR, ENOSYS, EPERM } from "./_errno.ts";
import { lastErrno, libc, SYS_IO_URING_ENTER } from "./_libc.ts";
import { closeFd, MAP_SHARED, mmap, munmap, PROT_READ, PROT_WRITE } from "./_syscalls.ts";
import { KvmError } from "./kvm_error.ts";

/** Bytes of `struct io_uring_params`. */
const PARAMS_SIZE = 120;
/** Bytes of one submission queue entry. */
const SQE_SIZE = 64;
/** Bytes of one completion queue entry. */
const CQE_SIZE = 16;
/** Bytes of a `struct iovec` (void *iov_base; size_t iov_len). */
export const IOVEC_SIZE = 16;
/** Most buffers one readv/writev/preadv/pwritev takes (Linux's `IOV_MAX`, `UIO_MAXIOV`). */
export const IOV_MAX = 1024;
/** mmap offset of the submission queue entries (`IORING_OFF_SQES`). */
const IORING_OFF_SQES = 0x1000_0000n;
/** The SQ and CQ rings share one mapping (`IORING_FEAT_SINGLE_MMAP`, Linux 5.4). */
const IORING_FEAT_SINGLE_MMAP = 1 << 0;
/** `IORING_ENTER_GETEVENTS`: wait for `min_complete` completions. */
const IORING_ENTER_GETEVENTS = 1;
/** `IOSQE_ASYNC`: always run in a kernel worker, never inline in `io_uring_enter` (Linux 5.6). */
const IOSQE_ASYNC = 1 << 4;
/** `IORING_OP_READV`. */
const IORING_OP_READV = 1;
/** `IORING_OP_WRITEV`. */
const IORING_OP_WRITEV = 2;
/** `IORING_OP_FSYNC`. */
const IORING_OP_FSYNC = 3;
/** `IORING_FSYNC_DATASYNC` in the SQE's `fsync_flags`: `fdatasync` rather than `fsync`. */
const IORING_FSYNC_DATASYNC = 1;
/** The op names of errors, by opcode. */
const OP_NAMES: Record<number, string> = {
  [IORING_OP_READV]: "preadv",
  [IORING_OP_WRITEV]: "pwritev",
  [IORING_OP_FSYNC]: "fdatasync",
};
/** Most iovecs one request carries (Linux's `UIO_MAXIOV`). */
export const IO_RING_MAX_IOVECS = 1024;
/** The fewest iovecs a slot's array holds: 1 KiB, which V8 keeps outside its heap (it never moves). */
const MIN_SLOT_IOVECS = 64;

/** Options of {@link IoRing.open}. */
export interface IoRingOptions {
  /**
   * Every transfer runs in one of io_uring's kernel workers (`IOSQE_ASYNC`, Linux 5.6), never inline
   * in `io_uring_enter` — QEMU's `aio=threads`. Default false: the kernel copies page-cache data at
   * once and hands only what must wait for the storage to a worker — QEMU's `aio=io_uring`.
   */
  workers?: boolean;
}

/** What a transfer does: `preadv` fills the iovecs from the file, `pwritev` writes them to it. */
export type IoRingOp = "preadv" | "pwritev";

/** Called on the ring's thread when a transfer finished: null, or why it failed. */
export type IoRingDone = (error: KvmError | null) => void;

let iovScratch: Uint32Array | undefined;

/**
 * The iovec array of every synchronous vectored call of this thread ({@link IOV_MAX} iovecs, as
 * 32-bit words for {@link putIovec}): the calls neither overlap nor nest, so one per isolate does.
 * Made at the first use.
 */
export function iovecScratch(): Uint32Array {
  return iovScratch ??= new Uint32Array(IOV_MAX * IOVEC_SIZE / 4);
}

/**
 * Writes iovec `i` of the array `words` (four 32-bit words an iovec): `length` bytes at host
 * `address`. Shared by the synchronous and the ring's vectored transfers.
 */
export function putIovec(words: Uint32Array, i: number, address: number, length: number): void {
  words[4 * i] = address >>> 0; // iov_base, little-endian halves
  words[4 * i + 1] = address / 0x1_0000_0000 >>> 0;
  words[4 * i + 2] = length >>> 0; // iov_len
  words[4 * i + 3] = length / 0x1_0000_0000 >>> 0;
}

/** Host address of a buffer's first byte (an ArrayBuffer's data never moves once outside V8's heap). */
function addressOf(buffer: ArrayBufferLike): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(buffer))));
}

/**
 * An `io_uring` instance for vectored file transfers. At most {@link IoRing.entries} transfers are
 * in flight; each keeps its iovecs in a slot of its own until it completes, and a short transfer
 * (rare on a regular file) is resubmitted for the rest, as QEMU's io_uring backend does.
 * Completions are taken by {@link IoRing.reap} when {@link IoRing.fd} is readable (poll it), or
 * waited for by {@link IoRing.drain}. One thread uses an instance.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DiskImage } from "./disk_image.ts";
 * import { IoRing } from "./io_ring.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeFileSync(path, new Uint8Array(4096).fill(7));
 * {
 *   using image = DiskImage.open(path);
 *   using ring = IoRing.open(8);
 *   const page = new Uint8Array(4096);
 *   const spans = { count: 1, buffers: [page.buffer], offsets: [0], lengths: [4096] };
 *   let result: unknown = "pending";
 *   assert.ok(image.startSpans(ring, "preadv", spans, 0, (error) => result = error));
 *   ring.drain(); // waits for the kernel's worker, then runs the callback
 *   assert.equal(result, null);
 *   assert.equal(page[4095], 7);
 * }
 * Deno.removeSync(path);
 * ```
 */
export class IoRing implements Disposable {
  /** The ring's fd: readable while completions wait to be reaped. */
  readonly fd: number;
  /** Most transfers in flight at once. */
  readonly entries: number;
  readonly #rings: { pointer: Deno.PointerObject; length: bigint };
  readonly #sqeMap: { pointer: Deno.PointerObject; length: bigint };
  readonly #sqHead: Uint32Array;
  readonly #sqTail: Uint32Array;
  readonly #sqMask: number;
  readonly #cqHead: Uint32Array;
  readonly #cqTail: Uint32Array;
  readonly #cqMask: number;
  readonly #cqes: DataView;
  readonly #sqeBytes: Uint8Array;
  readonly #sqes: DataView;
  // Per slot: the transfer's callback (undefined when free), op, fd, file offset, bytes left,
  // first pending iovec and how many, and the iovec array with its host address.
  readonly #done: (IoRingDone | undefined)[];
  readonly #op: Uint8Array;
  readonly #fds: Int32Array;
  readonly #offset: Float64Array;
  readonly #left: Float64Array;
  readonly #first: Uint16Array;
  readonly #count: Uint16Array;
  readonly #iov: (Uint32Array | undefined)[];
  readonly #iovAddress: Float64Array;
  readonly #free: number[] = [];
  /** The SQE flags of every transfer: `IOSQE_ASYNC` for {@link IoRingOptions.workers}. */
  readonly #sqeFlags: number;
  #inFlight = 0;
  #closed = false;

  private constructor(fd: number, entries: number, params: DataView, workers: boolean) {
    this.fd = fd;
    this.entries = entries;
    this.#sqeFlags = workers ? IOSQE_ASYNC : 0;
    const u32 = (o: number) => params.getUint32(o, true);
    const sqEntries = u32(0);
    const cqEntries = u32(4);
    const sqArray = u32(40 + 24);
    const cqes = u32(80 + 20);
    const ringBytes = Math.max(sqArray + 4 * sqEntries, cqes + CQE_SIZE * cqEntries);
    const rings = mmap(BigInt(ringBytes), PROT_READ | PROT_WRITE, MAP_SHARED, fd, "io_uring rings");
    let sqeMap;
    try {
      sqeMap = mmap(
        BigInt(SQE_SIZE * sqEntries),
        PROT_READ | PROT_WRITE,
        MAP_SHARED,
        fd,
        "io_uring SQEs",
        IORING_OFF_SQES,
      );
    } catch (error) {
      munmap(rings.pointer, BigInt(ringBytes));
      throw error;
    }
    this.#rings = { pointer: rings.pointer, length: BigInt(ringBytes) };
    this.#sqeMap = { pointer: sqeMap.pointer, length: BigInt(SQE_SIZE * sqEntries) };
    const ring = Deno.UnsafePointerView.getArrayBuffer(rings.pointer, ringBytes);
    const word = (offset: number) => new Uint32Array(ring, offset, 1);
    this.#sqHead = word(u32(40));
    this.#sqTail = word(u32(40 + 4));
    this.#sqMask = new Uint32Array(ring, u32(40 + 8), 1)[0];
    this.#cqHead = word(u32(80));
    this.#cqTail = word(u32(80 + 4));
    this.#cqMask = new Uint32Array(ring, u32(80 + 8), 1)[0];
    this.#cqes = new DataView(ring, cqes, CQE_SIZE * cqEntries);
    // SQE i always sits at index i of the SQ array: fill the indirection once.
    const array = new Uint32Array(ring, sqArray, sqEntries);
    for (let i = 0; i < sqEntries; i++) array[i] = i;
    const sqeBuffer = Deno.UnsafePointerView.getArrayBuffer(sqeMap.pointer, SQE_SIZE * sqEntries);
    this.#sqeBytes = new Uint8Array(sqeBuffer);
    this.#sqes = new DataView(sqeBuffer);
    this.#done = new Array(entries).fill(undefined);
    this.#op = new Uint8Array(entries);
    this.#fds = new Int32Array(entries);
    this.#offset = new Float64Array(entries);
    this.#left = new Float64Array(entries);
    this.#first = new Uint16Array(entries);
    this.#count = new Uint16Array(entries);
    this.#iov = new Array(entries).fill(undefined);
    this.#iovAddress = new Float64Array(entries);
    for (let i = entries - 1; i >= 0; i--) this.#free.push(i);
  }

  /**
   * Sets up a ring for `entries` transfers in flight (a power of two, 1–4096).
   *
   * @throws {RangeError} for another `entries`.
   * @throws {KvmError} with op `"io_uring_setup"` when the kernel has no io_uring or refuses it
   *   (ENOSYS; EPERM where `kernel.io_uring_disabled` or a seccomp filter forbids it; ENOMEM), or
   *   lacks `IORING_FEAT_SINGLE_MMAP` (Linux before 5.4: EINVAL).
   */
  static open(entries = 256, options: IoRingOptions = {}): IoRing {
    if (!Number.isInteger(entries) || entries < 1 || entries > 4096 || (entries & (entries - 1)) !== 0) {
      throw new RangeError(`IoRing.open: entries must be a power of two in 1–4096, got ${entries}`);
    }
    const params = new Uint8Array(PARAMS_SIZE);
    const fd = libc().io_uring_setup(entries, params);
    if (fd < 0) {
      const errno = lastErrno();
      throw new KvmError("io_uring_setup", errno, {
        detail: `${entries} entries`,
        hint: errno === EPERM
          ? "io_uring is turned off (sysctl kernel.io_uring_disabled) or forbidden by a seccomp filter (a container's)"
          : errno === ENOSYS
          ? "this kernel has no io_uring (CONFIG_IO_URING)"
          : undefined,
      });
    }
    const view = new DataView(params.buffer);
    try {
      if ((view.getUint32(20, true) & IORING_FEAT_SINGLE_MMAP) === 0) {
        throw new KvmError("io_uring_setup", 22, {
          detail: "the kernel lacks IORING_FEAT_SINGLE_MMAP (Linux 5.4)",
        });
      }
      return new IoRing(fd, entries, view, options.workers ?? false);
    } catch (error) {
      closeFd(fd);
      throw error;
    }
  }

  /** Transfers started and not yet completed. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Starts `op` on `fd` at byte `offset` over `count` spans (span i: `lengths[i]` bytes at byte
   * `offsets[i]` of `buffers[i]`), `total` bytes in all. `done` runs in
   * {@link reap} or {@link drain} once all of it moved, or with the error that stopped it. Returns
   * false, having started nothing, when every slot is busy, the spans are too many, or the kernel
   * did not take the request: the caller then moves the data itself. The caller has checked the
   * spans (inside their buffers) and the range (inside the file).
   *
   * @throws {TypeError} once closed.
   */
  start(
    op: IoRingOp,
    fd: number,
    offset: bigint | number,
    buffers: readonly ArrayBufferLike[],
    offsets: readonly number[],
    lengths: readonly number[],
    count: number,
    total: number,
    done: IoRingDone,
  ): boolean {
    if (this.#closed) throw new TypeError("IoRing: the ring is closed");
    if (count < 1 || count > IO_RING_MAX_IOVECS || this.#free.length === 0) return false;
    const slot = this.#free.pop()!;
    let iov = this.#iov[slot];
    if (iov === undefined || iov.length < 4 * count) {
      iov = new Uint32Array(4 * Math.max(MIN_SLOT_IOVECS, count));
      this.#iov[slot] = iov;
      this.#iovAddress[slot] = addressOf(iov.buffer);
    }
    let lastBuffer: ArrayBufferLike | undefined;
    let lastAddress = 0;
    for (let i = 0; i < count; i++) {
      if (buffers[i] !== lastBuffer) {
        lastBuffer = buffers[i];
        lastAddress = bufferAddress(lastBuffer);
      }
      putIovec(iov, i, lastAddress + offsets[i], lengths[i]);
    }
    const opcode = op === "preadv" ? IORING_OP_READV : IORING_OP_WRITEV;
    return this.#launch(slot, opcode, fd, Number(offset), total, count, done);
  }

  /**
   * Starts `fdatasync(fd)` (`IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`): `done` runs once every
   * write that completed before it is on stable storage, or with the error. Transfers still in flight
   * are not waited for (as the system call). Returns false, having started nothing, when every slot
   * is busy or the kernel did not take it.
   *
   * @throws {TypeError} once closed.
   */
  fdatasync(fd: number, done: IoRingDone): boolean {
    if (this.#closed) throw new TypeError("IoRing: the ring is closed");
    if (this.#free.length === 0) return false;
    return this.#launch(this.#free.pop()!, IORING_OP_FSYNC, fd, 0, 0, 0, done);
  }

  /** Fills busy `slot` with its operation and submits it; gives the slot back when that fails. */
  #launch(
    slot: number,
    opcode: number,
    fd: number,
    offset: number,
    left: number,
    count: number,
    done: IoRingDone,
  ): boolean {
    this.#op[slot] = opcode;
    this.#fds[slot] = fd;
    this.#offset[slot] = offset;
    this.#left[slot] = left;
    this.#first[slot] = 0;
    this.#count[slot] = count;
    if (!this.#submit(slot)) {
      this.#free.push(slot);
      return false;
    }
    this.#done[slot] = done;
    this.#inFlight++;
    return true;
  }

  /** Runs the callbacks of the transfers that completed; how many did. Never waits; 0 once closed. */
  reap(): number {
    if (this.#closed) return 0; // the rings are unmapped
    let finished = 0;
    const cqes = this.#cqes;
    for (;;) {
      const head = this.#cqHead[0];
      if (head === Atomics.load(this.#cqTail, 0)) return finished;
      const at = (head & this.#cqMask) * CQE_SIZE;
      const slot = cqes.getUint32(at, true); // user_data's low half
      const result = cqes.getInt32(at + 8, true);
      Atomics.store(this.#cqHead, 0, (head + 1) >>> 0);
      if (this.#complete(slot, result)) finished++;
    }
  }

  /**
   * Waits until every transfer in flight completed and ran its callback (a device reset, a snapshot
   * or teardown: the kernel must not write guest memory afterwards).
   *
   * @throws {KvmError} with op `"io_uring_enter"` when the kernel refuses to wait.
   */
  drain(): void {
    while (this.#inFlight > 0) {
      if (this.reap() > 0) continue;
      const result = Number(
        libc().io_uring_enter(SYS_IO_URING_ENTER, this.fd, 0, 1, IORING_ENTER_GETEVENTS, null, 0n),
      );
      if (result < 0) {
        const errno = lastErrno();
        if (errno !== EINTR) {
          throw new KvmError("io_uring_enter", errno, { detail: "waiting for completions" });
        }
      }
    }
  }

  /** Drains, then unmaps the rings and closes the fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    try {
      this.drain();
    } finally {
      this.#closed = true;
      munmap(this.#sqeMap.pointer, this.#sqeMap.length);
      munmap(this.#rings.pointer, this.#rings.length);
      closeFd(this.fd);
    }
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** A completion of `slot`: the rest resubmitted after a short transfer, or the callback run. */
  #complete(slot: number, result: number): boolean {
    const done = this.#done[slot];
    if (done === undefined) return false; // not ours (cannot happen: user_data is a busy slot)
    let error: KvmError | null = null;
    if (result >= 0 && result < this.#left[slot]) {
      if (result > 0 && this.#advance(slot, result) && this.#submit(slot)) return false;
      // Nothing moved (a read past the end of a file that shrank) or the rest could not be started.
      error = new KvmError(OP_NAMES[this.#op[slot]], 5, {
        detail: `short transfer: ${this.#left[slot]} bytes at ${this.#offset[slot]} not done`,
      });
    } else if (result < 0) {
      const op = this.#op[slot];
      error = new KvmError(OP_NAMES[op], -result, {
        detail: op === IORING_OP_FSYNC
          ? `fd ${this.#fds[slot]}`
          : `${this.#left[slot]} bytes at ${this.#offset[slot]}`,
      });
    }
    this.#done[slot] = undefined;
    this.#free.push(slot);
    this.#inFlight--;
    done(error);
    return true;
  }

  /** Moves `slot`'s iovecs past the `moved` bytes a short transfer did. */
  #advance(slot: number, moved: number): boolean {
    const iov = this.#iov[slot]!;
    let first = this.#first[slot];
    const end = first + this.#count[slot];
    let skip = moved;
    for (; first < end; first++) {
      const length = iov[4 * first + 2] + iov[4 * first + 3] * 0x1_0000_0000;
      if (skip < length) {
        const base = iov[4 * first] + iov[4 * first + 1] * 0x1_0000_0000;
        putIovec(iov, first, base + skip, length - skip);
        break;
      }
      skip -= length;
    }
    if (first >= end) return false;
    this.#count[slot] = end - first;
    this.#first[slot] = first;
    this.#offset[slot] += moved;
    this.#left[slot] -= moved;
    return true;
  }

  /** Puts `slot`'s transfer on the submission queue and enters the kernel; false if it was not taken. */
  #submit(slot: number): boolean {
    const tail = this.#sqTail[0];
    const index = tail & this.#sqMask;
    const at = index * SQE_SIZE;
    const sqe = this.#sqes;
    this.#sqeBytes.fill(0, at, at + SQE_SIZE);
    sqe.setUint8(at, this.#op[slot]);
    sqe.setUint8(at + 1, this.#sqeFlags);
    sqe.setInt32(at + 4, this.#fds[slot], true);
    const offset = this.#offset[slot];
    sqe.setUint32(at + 8, offset >>> 0, true);
    sqe.setUint32(at + 12, offset / 0x1_0000_0000 >>> 0, true);
    if (this.#op[slot] === IORING_OP_FSYNC) {
      sqe.setUint32(at + 28, IORING_FSYNC_DATASYNC, true); // fsync_flags
    } else {
      const address = this.#iovAddress[slot] + IOVEC_SIZE * this.#first[slot];
      sqe.setUint32(at + 16, address >>> 0, true);
      sqe.setUint32(at + 20, address / 0x1_0000_0000 >>> 0, true);
      sqe.setUint32(at + 24, this.#count[slot], true);
    }
    sqe.setUint32(at + 32, slot, true); // user_data
    Atomics.store(this.#sqTail, 0, (tail + 1) >>> 0);
    for (;;) {
      const result = Number(libc().io_uring_enter(SYS_IO_URING_ENTER, this.fd, 1, 0, 0, null, 0n));
      if (result >= 1) return true;
      const errno = result < 0 ? lastErrno() : 0;
      if (errno === EINTR) continue;
      // Not taken (EAGAIN: no memory for the request; EBUSY): withdraw it unless the kernel read it.
      if (this.#sqHead[0] === tail) {
        Atomics.store(this.#sqTail, 0, tail);
        return false;
      }
      return true;
    }
  }
}

/** Host addresses of ArrayBuffers' data, looked up once a buffer. */
const bufferAddresses = new WeakMap<ArrayBufferLike, number>();

/** The host address of a buffer's first byte, without an FFI call per piece. */
export function bufferAddress(buffer: ArrayBufferLike): number {
  let base = bufferAddresses.get(buffer);
  if (base === undefined) {
    base = addressOf(buffer);
    bufferAddresses.set(buffer, base);
  }
  return base;
}
