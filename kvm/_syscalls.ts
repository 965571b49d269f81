/**
 * The chokepoint between libc's `-1`/`MAP_FAILED` and {@link KvmError}: every syscall of the KVM
 * layer goes through one of these helpers, which read errno immediately after the call.
 *
 * @module
 */

import { EINTR } from "./_errno.ts";
import { lastErrno, libc } from "./_libc.ts";
import { errnoName, KvmError, kvmOpenError } from "./kvm_error.ts";

/** `O_RDONLY` (asm-generic/fcntl.h). */
export const O_RDONLY = 0o0;
/** `O_RDWR` (asm-generic/fcntl.h). */
export const O_RDWR = 0o2;
/** `O_NONBLOCK` (asm-generic/fcntl.h): reads and writes return EAGAIN instead of sleeping. */
export const O_NONBLOCK = 0o4_000;
/** `O_CLOEXEC` (asm-generic/fcntl.h): vCPU/VM fds must not leak into child processes. */
export const O_CLOEXEC = 0o2_000_000;
/** `PROT_READ` (asm-generic/mman-common.h). */
export const PROT_READ = 0x1;
/** `PROT_WRITE`. */
export const PROT_WRITE = 0x2;
/** `MAP_SHARED`: the kvm_run mapping must be shared with the kernel. */
export const MAP_SHARED = 0x01;
/** `MAP_PRIVATE`. */
export const MAP_PRIVATE = 0x02;
/** `MAP_ANONYMOUS` (x86). */
export const MAP_ANONYMOUS = 0x20;
/** `MAP_NORESERVE` (x86): do not reserve swap; pages are committed on first touch. */
export const MAP_NORESERVE = 0x4000;
/** `PROT_NONE`: address space only, any access faults. */
export const PROT_NONE = 0x0;
/** `MAP_FIXED`: at exactly the address given, replacing what was mapped there. */
export const MAP_FIXED = 0x10;
/** `MADV_DONTNEED`: drop the pages; private anonymous memory then reads as zeros. */
export const MADV_DONTNEED = 4;
/**
 * `MADV_HUGEPAGE`: back the range with transparent huge pages (2 MiB) where the host's THP mode is
 * `madvise` (Ubuntu's default; `always`, Debian's, needs no advice). EINVAL without THP.
 */
export const MADV_HUGEPAGE = 14;
/** `MADV_NOHUGEPAGE`: 4 KiB pages only for the range, whatever the host's THP mode. */
export const MADV_NOHUGEPAGE = 15;

/** `(void *) -1` as returned by a failed mmap. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** Opens a device node read-write with close-on-exec; failures get the KVM device's advice. */
export function openDevice(path: string): number {
  const fd = libc().open(new TextEncoder().encode(`${path}\0`), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw kvmOpenError(path, lastErrno());
  return fd;
}

/** A path as the NUL-terminated bytes libc takes. */
export function cString(text: string): Uint8Array {
  return new TextEncoder().encode(`${text}\0`);
}

/**
 * `open(path, flags | O_CLOEXEC)` of a file or device other than /dev/kvm; a failure is a
 * {@link KvmError} with op `open <path>` and `hint` when given for its code (e.g. `ENOENT`).
 */
export function openPath(path: string, flags: number, hints: Readonly<Record<string, string>> = {}): number {
  const fd = libc().open(cString(path), flags | O_CLOEXEC);
  if (fd < 0) {
    const errno = lastErrno();
    throw new KvmError(`open ${path}`, errno, { hint: hints[errnoName(errno)] });
  }
  return fd;
}

/**
 * Runs a libc call that returns -1 with errno, again while it fails with EINTR (a signal, such as
 * the vCPU kick, arrived first). Returns the result, or `-errno` for any other failure.
 */
export function retryOnEintr(call: () => number | bigint): number {
  for (;;) {
    const result = Number(call());
    if (result >= 0) return result;
    const errno = lastErrno();
    if (errno !== EINTR) return -errno;
  }
}

/** Closes an fd, ignoring errors: callers guarantee each fd is closed exactly once. */
export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/**
 * What a failed ioctl's error says besides the op: text, or a function that makes it, called only on
 * failure (for calls on the exit and interrupt paths, which must not build a string per call).
 */
export type Detail = string | (() => string);

function detailText(detail: Detail | undefined): string | undefined {
  return typeof detail === "function" ? detail() : detail;
}

/** `ioctl(fd, request, 0)`, for requests without an argument. Returns the non-negative result. */
export function ioctlNone(fd: number, request: number, op: string, detail?: Detail): number {
  const result = libc().ioctl(fd, request, null);
  if (result < 0) throw new KvmError(op, lastErrno(), { detail: detailText(detail) });
  return result;
}

/** `ioctl(fd, request, buffer)`, the kernel reading and/or writing a struct in `buffer`. */
export function ioctlBuf(
  fd: number,
  request: number,
  buffer: Uint8Array,
  op: string,
  detail?: Detail,
): number {
  const result = libc().ioctl_buf(fd, request, buffer);
  if (result < 0) throw new KvmError(op, lastErrno(), { detail: detailText(detail) });
  return result;
}

/** `ioctl(fd, request, value)` with an integer argument. */
export function ioctlU64(fd: number, request: number, value: bigint, op: string, detail?: Detail): number {
  const result = libc().ioctl_u64(fd, request, value);
  if (result < 0) throw new KvmError(op, lastErrno(), { detail: detailText(detail) });
  return result;
}

/** A successful mapping. */
export interface Mapping {
  /** Start of the mapping. */
  readonly pointer: Deno.PointerObject;
  /** The same as a number. */
  readonly address: bigint;
}

/**
 * `mmap(at, length, prot, flags, fd, offset)` (`at` null unless given: the kernel chooses);
 * MAP_FAILED becomes a {@link KvmError} with op `"mmap"`.
 */
export function mmap(
  length: bigint,
  prot: number,
  flags: number,
  fd: number,
  detail?: string,
  offset = 0n,
  at?: bigint,
): Mapping {
  const hint = at === undefined ? null : Deno.UnsafePointer.create(at);
  const pointer = libc().mmap(hint, length, prot, flags, fd, offset);
  const errno = lastErrno(); // before anything else can touch errno
  const address = pointer === null ? 0n : Deno.UnsafePointer.value(pointer);
  if (pointer === null || address === MAP_FAILED) throw new KvmError("mmap", errno, { detail });
  return { pointer, address };
}

/**
 * {@link mmap} at an address that is a multiple of `align` (a power of two, larger than a page), as
 * QEMU places guest RAM: it reserves `length + align` bytes of address space (`PROT_NONE`, no
 * memory), maps the aligned part over the reservation with `MAP_FIXED`, and gives back the rest.
 * The result is one mapping of exactly `length` bytes (whole host pages), to be unmapped as any other.
 */
export function mmapAligned(
  length: bigint,
  align: bigint,
  prot: number,
  flags: number,
  fd: number,
  detail?: string,
  offset = 0n,
): Mapping {
  const span = length + align;
  const reserved = mmap(span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, detail);
  const start = (reserved.address + align - 1n) / align * align;
  let mapping: Mapping;
  try {
    mapping = mmap(length, prot, flags | MAP_FIXED, fd, detail, offset, start);
  } catch (error) {
    munmap(reserved.pointer, span);
    throw error;
  }
  // The reservation before and after the mapping.
  if (start > reserved.address) munmap(reserved.pointer, start - reserved.address);
  const end = start + length;
  const reservedEnd = reserved.address + span;
  if (reservedEnd > end) munmap(Deno.UnsafePointer.create(end)!, reservedEnd - end);
  return mapping;
}

/** `munmap`; a failure here means a bookkeeping bug, so it throws. */
export function munmap(pointer: Deno.PointerObject, length: bigint): void {
  if (libc().munmap(pointer, length) < 0) throw new KvmError("munmap", lastErrno());
}

/** `madvise(pointer + offset, length, advice)`. */
export function madvise(address: bigint, length: bigint, advice: number, detail?: string): void {
  const result = libc().madvise(Deno.UnsafePointer.create(address), length, advice);
  if (result < 0) throw new KvmError("madvise", lastErrno(), { detail });
}

/**
 * Detaches an ArrayBuffer that views a mapping about to be unmapped, so that every typed array or
 * DataView over it reads as empty (or throws) instead of touching freed memory and crashing the
 * process. `transfer(0)` moves the (non-owning) backing store without copying a byte.
 */
export function detach(buffer: ArrayBuffer): void {
  if (!buffer.detached) buffer.transfer(0);
}

/** A buffer whose bytes the kernel may write through a pointer stored in another struct. */
export function pointerBuffer(length: number): Uint8Array {
  // A `new ArrayBuffer` always has an off-heap backing store, unlike a small `new Uint8Array(n)`
  // that V8 may keep inside its heap and move: the address stays valid while the buffer lives.
  return new Uint8Array(new ArrayBuffer(length));
}

/** The address of a buffer's first byte. */
export function addressOf(bytes: Uint8Array): bigint {
  const pointer = Deno.UnsafePointer.of(bytes);
  if (pointer === null) throw new Error("UnsafePointer.of returned null for a non-empty buffer");
  return Deno.UnsafePointer.value(pointer);
}
