/**
 * The project's only `Deno.dlopen`: the handful of glibc entry points the KVM layer needs.
 *
 * The library is opened lazily, on the first call of {@link libc}, so that importing `kvm/` costs
 * nothing and works on machines without `/dev/kvm` or without `--allow-ffi` (the struct, ioctl
 * and exit-decoding code is pure and tested everywhere). The five symbols every run calls are bound
 * then, in one `Deno.dlopen`; each other symbol on its first use: `Deno.dlopen` compiles a call
 * trampoline per symbol (0.1–0.3 ms each, measured), and a run uses about half of them — a
 * disk-less one none of the disk calls.
 *
 * Binding notes (see `docs/kvm-abi.md` §6):
 * - `ioctl(int fd, unsigned long request, ...)` is variadic; Deno FFI has no variadic calls, so the
 *   one symbol is bound three times under different JS names with `name: "ioctl"`. On x86-64 SysV
 *   a variadic integer or pointer travels in the same register (`rdx`) as a fixed one, and glibc's
 *   `ioctl` never reads `%al`, so fixed-arity declarations are exact.
 * - The request is declared `u32`: the kernel's `sys_ioctl` takes `unsigned int cmd`.
 * - A third argument that is an integer is declared `u64` and passed as a BigInt: a JS number on a
 *   64-bit parameter leaves the fast call path (measured 440–650 ns instead of 280–310 ns).
 *
 * @module
 */

import { EPERM } from "./_errno.ts";
import { KvmError } from "./kvm_error.ts";

/**
 * The libc symbol table, with the C prototype of each binding.
 *
 * Kept `as const` so that `Deno.dlopen` infers exact parameter and result types.
 */
const LIBC_SYMBOLS = {
  /** `ssize_t read(int fd, void *buf, size_t count);` */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** `ssize_t write(int fd, const void *buf, size_t count);` */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** `ssize_t writev(int fd, const struct iovec *iov, int iovcnt);` — virtio-net's frames to a tap. */
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** `ssize_t pread64(int fd, void *buf, size_t count, off64_t offset);` — the offset as a BigInt. */
  pread64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** `ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset);` */
  pwrite64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** `ssize_t preadv64(int fd, const struct iovec *iov, int iovcnt, off64_t offset);` */
  preadv64: { parameters: ["i32", "buffer", "i32", "i64"], result: "isize" },
  /** `ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off64_t offset);` */
  pwritev64: { parameters: ["i32", "buffer", "i32", "i64"], result: "isize" },
  /** `int poll(struct pollfd *fds, nfds_t nfds, int timeout);` — blocks the calling thread (a Worker). */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /**
   * `int ioctl(int fd, unsigned long request, void *arg);` for requests without an argument.
   * Always pass `null`: `KVM_RUN`, `KVM_GET_API_VERSION` and `KVM_GET_VCPU_MMAP_SIZE` reject a
   * non-zero third argument with EINVAL (`virt/kvm/kvm_main.c`), and `rdx` must not be garbage.
   */
  ioctl: { parameters: ["i32", "u32", "pointer"], result: "i32" },
  /** `int ioctl(int fd, unsigned long request, struct ... *arg);` — a struct laid out in a buffer. */
  ioctl_buf: { name: "ioctl", parameters: ["i32", "u32", "buffer"], result: "i32" },
  /**
   * `int sigaction(int signum, const struct sigaction *act, struct sigaction *oldact);` — glibc's
   * 152-byte struct (handler, 128-byte mask, flags, restorer; glibc supplies the restorer).
   */
  sigaction: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /**
   * `io_uring_enter(unsigned fd, u32 to_submit, u32 min_complete, u32 flags, const void *argp,
   * size_t argsz)` through glibc's `syscall` (glibc has no wrapper), on the disk's hot path: a
   * binding of its own with 32-bit arguments, so no BigInt is made per call. The number is passed
   * as the BigInt {@link SYS_IO_URING_ENTER}.
   */
  io_uring_enter: {
    name: "syscall",
    parameters: ["i64", "i32", "u32", "u32", "u32", "pointer", "usize"],
    result: "i64",
  },
  /** `int *__errno_location(void);` — glibc's per-thread errno cell. */
  __errno_location: { parameters: [], result: "pointer" },
  /**
   * `long syscall(long number, ...);` — variadic; six integer arguments (the sixth on the stack,
   * which glibc's x86-64 `syscall` reads as the kernel's sixth). It returns -1 and sets errno on
   * failure, as the named wrappers do. The calls off the hot paths go through this one binding:
   * `Deno.dlopen` costs about 0.33 ms per symbol (measured), and a run used 18 of them.
   */
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;

/** x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
const SYS = {
  close: 3,
  lseek: 8,
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  ioctl: 16,
  madvise: 28,
  getpid: 39,
  fcntl: 72,
  fdatasync: 75,
  fallocate: 285,
  gettid: 186,
  timer_create: 222,
  timer_settime: 223,
  timer_delete: 226,
  tgkill: 234,
  openat: 257,
  eventfd2: 290,
  getrandom: 318,
  io_uring_setup: 425,
} as const;
/** x86-64's `io_uring_enter` (426), for the {@link LIBC_SYMBOLS} binding of that name. */
export const SYS_IO_URING_ENTER = 426n;
/** `AT_FDCWD`: `openat` relative to the working directory, as `open`. */
const AT_FDCWD = -100;
/** What `mmap` returns on failure. */
const MAP_FAILED_ADDRESS = 0xffff_ffff_ffff_ffffn;

/**
 * The calls that no hot path makes, each through glibc's `syscall` (one FFI binding for all):
 * the same arguments, results and errno as the glibc functions of the same names, with the
 * kernel's own `timer_t` (an int).
 */
export interface ColdCalls {
  /** `int open(const char *pathname, int flags);` — pathname as NUL-terminated bytes (`openat`). */
  open(path: Uint8Array, flags: number): number;
  /** `int close(int fd);` */
  close(fd: number): number;
  /** `off64_t lseek64(int fd, off64_t offset, int whence);` */
  lseek64(fd: number, offset: number | bigint, whence: number): number | bigint;
  /** `int fdatasync(int fd);` */
  fdatasync(fd: number): number;
  /** `int fallocate(int fd, int mode, off_t offset, off_t len);` */
  fallocate(fd: number, mode: number, offset: bigint, length: bigint): number;
  /** `int fcntl(int fd, int cmd, void *arg);` — the byte-range locks and F_SETOWN_EX. */
  fcntl_ptr(fd: number, cmd: number, arg: Uint8Array): number;
  /** `int fcntl(int fd, int cmd, long arg);` — the integer commands (F_GETFL, F_SETFL, F_SETSIG). */
  fcntl_int(fd: number, cmd: number, arg: number | bigint): number;
  /** `int eventfd(unsigned int initval, int flags);` (`eventfd2`) */
  eventfd(initval: number, flags: number): number;
  /** `ssize_t getrandom(void *buf, size_t buflen, unsigned int flags);` */
  getrandom(buf: Uint8Array, length: number | bigint, flags: number): number | bigint;
  /** `int io_uring_setup(u32 entries, struct io_uring_params *p);` */
  io_uring_setup(entries: number, params: Uint8Array): number;
  /** `int ioctl(int fd, unsigned long request, unsigned long arg);` — an integer argument. */
  ioctl_u64(fd: number, request: number, arg: bigint): number;
  /** `void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);` */
  mmap(
    addr: Deno.PointerValue,
    length: number | bigint,
    prot: number,
    flags: number,
    fd: number,
    offset: number | bigint,
  ): Deno.PointerValue;
  /** `int munmap(void *addr, size_t length);` */
  munmap(addr: Deno.PointerValue, length: number | bigint): number;
  /** `int madvise(void *addr, size_t length, int advice);` */
  madvise(addr: Deno.PointerValue, length: number | bigint, advice: number): number;
  /** `int mprotect(void *addr, size_t len, int prot);` */
  mprotect(addr: Deno.PointerValue, length: number | bigint, prot: number): number;
  /** `pid_t getpid(void);` */
  getpid(): number;
  /** `pid_t gettid(void);` — the calling thread's id, for {@link tgkill}. */
  gettid(): number;
  /** `int tgkill(pid_t tgid, pid_t tid, int sig);` — a signal to one thread. */
  tgkill(tgid: number, tid: number, signal: number): number;
  /** `timer_create(clockid, struct sigevent *, int *id)` — the kernel's call: the id is an int. */
  timer_create(clock: number, event: Uint8Array, idOut: Uint8Array): number;
  /** `timer_settime(int id, int flags, const struct itimerspec *new, struct itimerspec *old)` */
  timer_settime(id: number, flags: number, value: Uint8Array, old: Uint8Array | null): number;
  /** `timer_delete(int id)` */
  timer_delete(id: number): number;
}

/** An address for a system call argument (0 for null or an empty buffer). */
function addressOf(value: Deno.PointerValue | Uint8Array | null): bigint {
  if (value === null) return 0n;
  const pointer = value instanceof Uint8Array ? Deno.UnsafePointer.of(value) : value;
  return BigInt(Deno.UnsafePointer.value(pointer));
}

/** A result as a number when it fits (every one but a 64-bit offset does). */
function small(result: number | bigint): number {
  return Number(result);
}

/** {@link ColdCalls} over the `syscall` binding of `symbols`. */
function coldCalls(symbols: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"]): ColdCalls {
  const n = BigInt;
  const call = (nr: number, a: number | bigint = 0, b: number | bigint = 0, c: number | bigint = 0, d = 0n) =>
    symbols.syscall(n(nr), n(a), n(b), n(c), d, 0n, 0n);
  return {
    open: (path, flags) => small(call(SYS.openat, AT_FDCWD, addressOf(path), flags)),
    close: (fd) => small(call(SYS.close, fd)),
    lseek64: (fd, offset, whence) => call(SYS.lseek, fd, offset, whence),
    fdatasync: (fd) => small(call(SYS.fdatasync, fd)),
    fallocate: (fd, mode, offset, length) => small(call(SYS.fallocate, fd, mode, offset, BigInt(length))),
    fcntl_ptr: (fd, cmd, arg) => small(call(SYS.fcntl, fd, cmd, addressOf(arg))),
    fcntl_int: (fd, cmd, arg) => small(call(SYS.fcntl, fd, cmd, arg)),
    eventfd: (initval, flags) => small(call(SYS.eventfd2, initval, flags)),
    getrandom: (buf, length, flags) => call(SYS.getrandom, addressOf(buf), length, flags),
    io_uring_setup: (entries, params) => small(call(SYS.io_uring_setup, entries, addressOf(params))),
    ioctl_u64: (fd, request, arg) => small(call(SYS.ioctl, fd, request >>> 0, arg)),
    mmap: (addr, length, prot, flags, fd, offset) => {
      const result = symbols.syscall(
        n(SYS.mmap),
        addressOf(addr),
        n(length),
        n(prot),
        n(flags),
        n(fd),
        n(offset),
      );
      const address = BigInt(result) === -1n ? MAP_FAILED_ADDRESS : BigInt.asUintN(64, BigInt(result));
      return Deno.UnsafePointer.create(address);
    },
    munmap: (addr, length) => small(call(SYS.munmap, addressOf(addr), length)),
    madvise: (addr, length, advice) => small(call(SYS.madvise, addressOf(addr), length, advice)),
    mprotect: (addr, length, prot) => small(call(SYS.mprotect, addressOf(addr), length, prot)),
    getpid: () => small(call(SYS.getpid)),
    gettid: () => small(call(SYS.gettid)),
    tgkill: (tgid, tid, signal) => small(call(SYS.tgkill, tgid, tid, signal)),
    timer_create: (clock, event, idOut) =>
      small(call(SYS.timer_create, clock, addressOf(event), addressOf(idOut))),
    timer_settime: (id, flags, value, old) =>
      small(call(SYS.timer_settime, id, flags, addressOf(value), addressOf(old))),
    timer_delete: (id) => small(call(SYS.timer_delete, id)),
  };
}

/** The bound libc functions, typed from {@link LIBC_SYMBOLS}, and the {@link ColdCalls}. */
export type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"] & ColdCalls;

/** glibc's soname on Linux (x86-64 and others). */
const LIBC_SONAME = "libc.so.6";

let symbols: Libc | undefined;
/** A 4-byte view over this thread's errno: module state is per isolate, i.e. per thread. */
let errnoCell: Int32Array | undefined;

/**
 * The symbols of `definitions` as one object whose properties bind their symbol on first read
 * (through `bind`, once) and are plain read-only data properties from then on, so a call through
 * it costs what a call through `Deno.dlopen`'s own symbols object costs. A failed `bind` binds
 * nothing: the next read tries again.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lazySymbols } from "./_libc.ts";
 * const bound: string[] = [];
 * const lazy = lazySymbols({ getpid: { parameters: [], result: "i32" } } as const, (name) => {
 *   bound.push(name);
 *   return () => 42;
 * });
 * assert.deepEqual(bound, []);
 * assert.equal(lazy.getpid(), 42);
 * assert.equal(lazy.getpid(), 42);
 * assert.deepEqual(bound, ["getpid"]);
 * ```
 */
export function lazySymbols<S extends Deno.ForeignLibraryInterface>(
  definitions: S,
  bind: (name: keyof S & string) => unknown,
): Deno.DynamicLibrary<S>["symbols"] {
  const lazy = {} as Deno.DynamicLibrary<S>["symbols"];
  for (const name of Object.keys(definitions)) {
    Object.defineProperty(lazy, name, {
      configurable: true,
      enumerable: true,
      get() {
        const value = bind(name);
        // Redefined in place: the object keeps V8's fast properties (measured with
        // %HasFastProperties), and callers that keep a symbol keep the bound function.
        Object.defineProperty(lazy, name, { value, enumerable: true, writable: false, configurable: false });
        return value;
      },
    });
  }
  return lazy;
}

/** libc opened with `definitions` (a subset of {@link LIBC_SYMBOLS}); a refused FFI is a KvmError. */
function openLibc<S extends Deno.ForeignLibraryInterface>(definitions: S): Deno.DynamicLibrary<S> {
  try {
    return Deno.dlopen(LIBC_SONAME, definitions);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      // The same error type as every other KVM failure, so callers branch on `code` alone.
      throw new KvmError("dlopen", EPERM, {
        detail: LIBC_SONAME,
        hint: "the KVM layer calls libc through FFI: run Deno with --allow-ffi",
        cause: error,
      });
    }
    throw error;
  }
}

/** One symbol of {@link LIBC_SYMBOLS}, bound on its own. */
function bindLibc<K extends keyof typeof LIBC_SYMBOLS>(name: K): Libc[K] {
  const one = { [name]: LIBC_SYMBOLS[name] } as Pick<typeof LIBC_SYMBOLS, K>;
  return openLibc(one).symbols[name] as unknown as Libc[K];
}

/**
 * Opens libc on first use and returns its symbols, each bound when first read.
 *
 * @throws {KvmError} op `"dlopen"`, code `EPERM`, when FFI is not permitted (run with
 *   `--allow-ffi`); the error of `Deno.dlopen` when libc cannot be loaded.
 */
export function libc(): Libc {
  if (symbols) return symbols;
  // The symbols every run calls (a boot, a restore), bound in one dlopen: measured on a kvm_pvm
  // host, 8 alternating processes, these five one by one took 1.36–1.60 ms, together 1.20–1.36.
  const core = openLibc({
    __errno_location: LIBC_SYMBOLS.__errno_location,
    syscall: LIBC_SYMBOLS.syscall,
    ioctl: LIBC_SYMBOLS.ioctl,
    ioctl_buf: LIBC_SYMBOLS.ioctl_buf,
    sigaction: LIBC_SYMBOLS.sigaction,
  }).symbols;
  const lazy = lazySymbols(
    LIBC_SYMBOLS,
    (name) => Object.hasOwn(core, name) ? core[name as keyof typeof core] : bindLibc(name),
  );
  // __errno_location() is constant for the life of a thread: resolve it once and read the cell
  // directly afterwards (no FFI call may happen between a failing call and the read). Binding it
  // here opens libc, so a refused FFI is reported by this first call, whatever symbol it wanted.
  const cell = lazy.__errno_location();
  if (cell === null) throw new Error("__errno_location() returned NULL");
  errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(cell, 4));
  // The cold calls sit beside the lazily bound symbols, as plain functions over `syscall`.
  const all: Libc = Object.assign(lazy, coldCalls(lazy));
  symbols = all;
  return all;
}

/**
 * The current thread's errno. Call it immediately after a libc call returned -1 (or MAP_FAILED),
 * with no FFI call in between, since any libc call may overwrite errno.
 */
export function lastErrno(): number {
  return errnoCell ? errnoCell[0] : 0;
}

/**
 * The host page size in bytes: 4096, the base page of x86-64 Linux (the only host this layer runs
 * on), without a `sysconf` binding.
 */
export function hostPageSize(): number {
  return 4096;
}
