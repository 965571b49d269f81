/**
 * The project's only `Deno.dlopen`: the handful of glibc entry points the KVM layer needs.
 *
 * The library is opened lazily, on the first call of {@link libc}, so that importing `kvm/` costs
 * nothing and works on machines without `/dev/kvm` or without `--allow-ffi` (the struct, ioctl
 * and exit-decoding code is pure and tested everywhere). Each symbol is bound on its first use:
 * `Deno.dlopen` compiles a call trampoline per symbol (about 0.3 ms each, measured), and a run
 * uses about half of them — a disk-less one none of the disk calls.
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
  /** `int open(const char *pathname, int flags);` — pathname as NUL-terminated bytes. */
  open: { parameters: ["buffer", "i32"], result: "i32" },
  /** `ssize_t read(int fd, void *buf, size_t count);` */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** `ssize_t write(int fd, const void *buf, size_t count);` */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** `int close(int fd);` */
  close: { parameters: ["i32"], result: "i32" },
  /** `ssize_t pread64(int fd, void *buf, size_t count, off64_t offset);` — the offset as a BigInt. */
  pread64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** `ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset);` */
  pwrite64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** `ssize_t preadv64(int fd, const struct iovec *iov, int iovcnt, off64_t offset);` */
  preadv64: { parameters: ["i32", "buffer", "i32", "i64"], result: "isize" },
  /** `ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off64_t offset);` */
  pwritev64: { parameters: ["i32", "buffer", "i32", "i64"], result: "isize" },
  /** `off64_t lseek64(int fd, off64_t offset, int whence);` */
  lseek64: { parameters: ["i32", "i64", "i32"], result: "i64" },
  /** `int fdatasync(int fd);` */
  fdatasync: { parameters: ["i32"], result: "i32" },
  /**
   * `int fcntl(int fd, int cmd, void *arg);` — variadic like `ioctl`, bound with the
   * pointer form: the byte-range locks (F_OFD_SETLK, F_OFD_GETLK) and F_SETOWN_EX.
   */
  fcntl_ptr: { name: "fcntl", parameters: ["i32", "i32", "buffer"], result: "i32" },
  /** `int eventfd(unsigned int initval, int flags);` */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** `int poll(struct pollfd *fds, nfds_t nfds, int timeout);` — blocks the calling thread (a Worker). */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** `ssize_t getrandom(void *buf, size_t buflen, unsigned int flags);` (glibc 2.25+) */
  getrandom: { parameters: ["buffer", "usize", "u32"], result: "isize" },
  /**
   * `int ioctl(int fd, unsigned long request, void *arg);` for requests without an argument.
   * Always pass `null`: `KVM_RUN`, `KVM_GET_API_VERSION` and `KVM_GET_VCPU_MMAP_SIZE` reject a
   * non-zero third argument with EINVAL (`virt/kvm/kvm_main.c`), and `rdx` must not be garbage.
   */
  ioctl: { parameters: ["i32", "u32", "pointer"], result: "i32" },
  /** `int ioctl(int fd, unsigned long request, struct ... *arg);` — a struct laid out in a buffer. */
  ioctl_buf: { name: "ioctl", parameters: ["i32", "u32", "buffer"], result: "i32" },
  /** `int ioctl(int fd, unsigned long request, unsigned long arg);` — an integer argument (BigInt). */
  ioctl_u64: { name: "ioctl", parameters: ["i32", "u32", "u64"], result: "i32" },
  /** `void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);` */
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  /** `int munmap(void *addr, size_t length);` */
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  /** `int madvise(void *addr, size_t length, int advice);` */
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  /** `long sysconf(int name);` */
  sysconf: { parameters: ["i32"], result: "i64" },
  /** `pid_t getpid(void);` */
  getpid: { parameters: [], result: "i32" },
  /** `pid_t gettid(void);` (glibc 2.30+) — the calling thread's id, for {@link tgkill}. */
  gettid: { parameters: [], result: "i32" },
  /** `int tgkill(pid_t tgid, pid_t tid, int sig);` (glibc 2.30+) — a signal to one thread. */
  tgkill: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** `int timer_create(clockid_t, struct sigevent *, timer_t *);` (in libc since glibc 2.34). */
  timer_create: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** `int timer_settime(timer_t, int flags, const struct itimerspec *, struct itimerspec *);` */
  timer_settime: { parameters: ["pointer", "i32", "buffer", "pointer"], result: "i32" },
  /** `int timer_delete(timer_t);` */
  timer_delete: { parameters: ["pointer"], result: "i32" },
  /**
   * `int sigaction(int signum, const struct sigaction *act, struct sigaction *oldact);` — glibc's
   * 152-byte struct (handler, 128-byte mask, flags, restorer; glibc supplies the restorer).
   */
  sigaction: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** `int mprotect(void *addr, size_t len, int prot);` */
  mprotect: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  /** `int fcntl(int fd, int cmd, long arg);` — the integer commands (F_GETFL, F_SETFL, F_SETSIG). */
  fcntl_int: { name: "fcntl", parameters: ["i32", "i32", "i64"], result: "i32" },
  /** `int *__errno_location(void);` — glibc's per-thread errno cell. */
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The bound libc functions, typed from {@link LIBC_SYMBOLS}. */
export type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

/** glibc's soname on Linux (x86-64 and others). */
const LIBC_SONAME = "libc.so.6";

/** `_SC_PAGESIZE` from glibc `<bits/confname.h>`. */
const SC_PAGESIZE = 30;

let symbols: Libc | undefined;
/** A 4-byte view over this thread's errno: module state is per isolate, i.e. per thread. */
let errnoCell: Int32Array | undefined;
let pageSize: number | undefined;

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
  const lazy = lazySymbols(LIBC_SYMBOLS, bindLibc);
  // __errno_location() is constant for the life of a thread: resolve it once and read the cell
  // directly afterwards (no FFI call may happen between a failing call and the read). Binding it
  // here opens libc, so a refused FFI is reported by this first call, whatever symbol it wanted.
  const cell = lazy.__errno_location();
  if (cell === null) throw new Error("__errno_location() returned NULL");
  errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(cell, 4));
  symbols = lazy;
  return lazy;
}

/**
 * The current thread's errno. Call it immediately after a libc call returned -1 (or MAP_FAILED),
 * with no FFI call in between, since any libc call may overwrite errno.
 */
export function lastErrno(): number {
  return errnoCell ? errnoCell[0] : 0;
}

/** The host page size in bytes (`sysconf(_SC_PAGESIZE)`), cached. 4096 on x86-64. */
export function hostPageSize(): number {
  pageSize ??= Number(libc().sysconf(SC_PAGESIZE));
  return pageSize;
}
