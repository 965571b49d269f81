/**
 * Signals turned into wake-ups of the thread that serves the VM, without a second thread.
 *
 * A vCPU run on the VM thread sleeps inside `KVM_RUN` while its guest halts. Typed input and
 * SIGTERM must still wake it at once, and no wake-up may be lost between two `KVM_RUN`s. QEMU does
 * this with a thread per vCPU, signals blocked outside `KVM_RUN` (`KVM_SET_SIGNAL_MASK`) and a
 * main-loop thread. Deno runs JavaScript on one thread per isolate, and a second isolate costs about
 * 10 ms and 10 MiB at start-up, so this module does it with the kernel alone:
 *
 * - A signal handler of our own, a few bytes of x86-64 machine code in a page of its own (no
 *   JavaScript can run in a signal handler). For each relayed signal it counts the signal, sets a
 *   byte (the vCPU's `kvm_run.immediate_exit`) and makes one system call from its parameter block:
 *   `tgkill(pid, vm_tid, SIGUSR2)` to break the VM thread out of `KVM_RUN`, or `write(eventfd, 1)`
 *   to wake a thread sleeping in poll(2). It runs on whichever thread the kernel picks for a
 *   process-directed signal (SIGTERM from `kill`), so the VM thread need not be the one.
 * - Input without a reader thread: `O_ASYNC` on the console fd with `F_SETOWN_EX` names the VM
 *   thread, so the kernel itself sends SIGIO to it when bytes arrive; SIGIO is relayed too.
 *
 * Why no wake-up is lost: a source (the kernel queuing input, a `kill`) makes its news visible
 * before the signal is generated, and the handler sets `immediate_exit` before it signals. The VM
 * thread clears `immediate_exit` before it looks for news (`VcpuRunner`). News that arrives after
 * the look sets the flag again, and `KVM_RUN` with the flag set returns at once (api.rst,
 * KVM_CAP_IMMEDIATE_EXIT). With an eventfd the count in the eventfd plays the flag's part.
 *
 * The handler code is data-driven: it reads its targets from a parameter page that JavaScript
 * writes, so retargeting never rewrites code. Retargeting first disables the handler and waits
 * until no handler is inside (an in-flight count, both sides using locked instructions, which are
 * full fences on x86-64): a handler can never write into a `kvm_run` page that is being unmapped.
 * The code page is made once per process and stays mapped: a handler may still be returning
 * through it after its signal was uninstalled.
 *
 * @module
 */

import { lastErrno, libc } from "./_libc.ts";
import { MAP_ANONYMOUS, MAP_PRIVATE, mmap, PROT_READ, PROT_WRITE, retryOnEintr } from "./_syscalls.ts";
import { KvmError } from "./kvm_error.ts";

/** `SIGHUP`. */
export const SIGHUP = 1;
/** `SIGINT`. */
export const SIGINT = 2;
/** `SIGUSR1`. */
export const SIGUSR1 = 10;
/** `SIGUSR2`: the project's vCPU kick signal (`KICK_SIGNAL` in vcpu_kicker.ts). */
export const SIGUSR2 = 12;
/** `SIGTERM`. */
export const SIGTERM = 15;
/** `SIGIO`: what the kernel sends for `O_ASYNC` input. */
export const SIGIO = 29;

const PROT_EXEC = 0x4;
const PAGE = 4096;

/** glibc's `struct sigaction` on x86-64: handler, 128-byte mask, int flags (+4), restorer. */
const SIGACTION_SIZE = 152;
const SA_MASK_OFFSET = 8;
const SA_FLAGS_OFFSET = 136;
/** `SA_RESTART`: other threads' interrupted system calls are restarted where they can be. */
const SA_RESTART = 0x1000_0000;

/** `fcntl` commands (asm-generic/fcntl.h). */
const F_GETFL = 3;
const F_SETFL = 4;
const F_SETSIG = 10;
const F_GETSIG = 11;
const F_GETOWN_EX = 16;
const F_SETOWN_EX = 15;
const O_ASYNC = 0o20_000;
/** `F_OWNER_TID` of `struct f_owner_ex`: the signal goes to one thread. */
const F_OWNER_TID = 0;

/** System call numbers (x86-64). */
const SYS_WRITE = 1;
const SYS_GETPID = 39;
const SYS_TGKILL = 234;

/**
 * The parameter page: one 32-bit count per signal number (0–63), then the handler's targets.
 * Every offset below is also an immediate in {@link HANDLER_CODE}.
 */
const P_COUNTS = 0;
const P_FLAG = 256; // u64: address of the byte set to 1 (immediate_exit, or P_SPARE_BYTE)
const P_NR = 264; // u64: system call number
const P_ARG1 = 272; // u64
const P_ARG2 = 280; // u64
const P_ARG3 = 288; // u64
const P_ONE = 296; // u64: the value 1, which an eventfd write sends
const P_SPARE_BYTE = 304; // the flag's target when there is no vCPU to flag
const P_INFLIGHT = 312; // i32: handlers inside the guarded part
const P_DISABLED = 316; // i32: non-zero while the targets are being changed

/**
 * The handler, `void handler(int signo)` (signo in edi), position-independent except for the one
 * 64-bit address of the parameter page patched in at {@link PARAMS_IMMEDIATE}; each line below is one
 * instruction. It counts the signal; then, unless disabled, sets the flag byte and makes the system
 * call of the parameter page, with the in-flight count held around that part.
 *
 * It touches only caller-saved registers and makes a raw system call (errno is untouched), so it
 * is async-signal-safe.
 */
// deno-fmt-ignore
const HANDLER_CODE = [
  0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, // movabs rax, params
  0xf0, 0xff, 0x04, 0xb8, //             lock inc dword [rax + rdi*4]
  0xf0, 0xff, 0x80, 0x38, 0x01, 0x00, 0x00, // lock inc dword [rax + 312]
  0x83, 0xb8, 0x3c, 0x01, 0x00, 0x00, 0x00, // cmp dword [rax + 316], 0
  0x75, 0x2a, //                         jnz done
  0x48, 0x8b, 0x88, 0x00, 0x01, 0x00, 0x00, // mov rcx, [rax + 256]
  0xc6, 0x01, 0x01, //                   mov byte [rcx], 1
  0x48, 0x8b, 0xb8, 0x10, 0x01, 0x00, 0x00, // mov rdi, [rax + 272]
  0x48, 0x8b, 0xb0, 0x18, 0x01, 0x00, 0x00, // mov rsi, [rax + 280]
  0x48, 0x8b, 0x90, 0x20, 0x01, 0x00, 0x00, // mov rdx, [rax + 288]
  0x50, //                               push rax
  0x48, 0x8b, 0x80, 0x08, 0x01, 0x00, 0x00, // mov rax, [rax + 264]
  0x0f, 0x05, //                         syscall
  0x58, //                               pop rax
  0xf0, 0xff, 0x88, 0x38, 0x01, 0x00, 0x00, // done: lock dec dword [rax + 312]
  0xc3, //                               ret
] as const;
const PARAMS_IMMEDIATE = 2;
/** Where the code page holds a lone `ret` (c3): a handler that does nothing. */
const NOOP_OFFSET = 128;

/** The code and parameter pages, made once per process (see the module comment). */
interface Pages {
  handler: Deno.PointerValue;
  params: bigint;
  words: BigUint64Array;
  cells: Int32Array;
}
let pages: Pages | undefined;

function makePages(): Pages {
  if (pages) return pages;
  const data = mmap(
    BigInt(PAGE),
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    "signal relay parameters",
  );
  const code = mmap(
    BigInt(PAGE),
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    "signal relay handler",
  );
  const buffer = Deno.UnsafePointerView.getArrayBuffer(data.pointer, PAGE);
  const words = new BigUint64Array(buffer);
  const cells = new Int32Array(buffer);
  const bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(code.pointer, PAGE));
  bytes.set(HANDLER_CODE);
  bytes[NOOP_OFFSET] = 0xc3;
  new DataView(bytes.buffer).setBigUint64(PARAMS_IMMEDIATE, data.address, true);
  if (libc().mprotect(code.pointer, BigInt(PAGE), PROT_READ | PROT_EXEC) < 0) {
    throw new KvmError("mprotect", lastErrno(), { detail: "signal relay handler" });
  }
  words[P_ONE / 8] = 1n;
  pages = { handler: code.pointer, params: data.address, words, cells };
  disarm(pages);
  return pages;
}

/**
 * Gives `signal` a handler that does nothing, for the life of the process (it is never restored).
 * A signal with a handler interrupts a blocking system call such as `KVM_RUN` (EINTR), where an
 * ignored one would be dropped and a default one would end the process: the vCPU kick signal's
 * disposition. Cheaper than a Deno signal listener (no listener machinery, no extra memory).
 *
 * @throws {KvmError} when `sigaction` refuses.
 */
export function installNoopHandler(signal: number): void {
  const p = makePages();
  const action = sigactionStruct(Deno.UnsafePointer.value(p.handler) + BigInt(NOOP_OFFSET), false);
  if (libc().sigaction(signal, action, null as unknown as Uint8Array) < 0) {
    throw new KvmError("sigaction", lastErrno(), { detail: `signal ${signal}` });
  }
}

/** A `struct sigaction` for `handler` with SA_RESTART; `blockAll` blocks every signal while it runs. */
function sigactionStruct(handler: bigint, blockAll: boolean): Uint8Array {
  const action = new Uint8Array(SIGACTION_SIZE);
  const view = new DataView(action.buffer);
  view.setBigUint64(0, handler, true);
  if (blockAll) action.fill(0xff, SA_MASK_OFFSET, SA_MASK_OFFSET + 128);
  view.setInt32(SA_FLAGS_OFFSET, SA_RESTART, true);
  return action;
}

/** The targets of a harmless handler: `getpid()`, the spare byte. */
function disarm(p: Pages): void {
  p.words[P_NR / 8] = BigInt(SYS_GETPID);
  p.words[P_FLAG / 8] = p.params + BigInt(P_SPARE_BYTE);
}

/** Where the relay's handler sends its wake-up. */
export type RelayTarget =
  /** Set the byte at `flagAddress` (a vCPU's `immediate_exit`) and `tgkill(pid, tid, SIGUSR2)`. */
  | { kind: "kick"; pid: number; tid: number; flagAddress: bigint }
  /** Write 1 to an eventfd (a thread that waits in poll(2) on it). */
  | { kind: "eventfd"; fd: number }
  /** Count only. */
  | { kind: "none" };

/**
 * The relay of a set of signals: installed with {@link SignalRelay.install}, retargeted with
 * {@link SignalRelay.target}, and uninstalled by `close` (the previous actions come back).
 *
 * @example
 * ```ts ignore
 * using relay = SignalRelay.install([SIGTERM, SIGIO]);
 * relay.target({ kind: "eventfd", fd: eventfd.fd });
 * // … poll(eventfd) … then relay.count(SIGTERM)
 * ```
 */
export class SignalRelay implements Disposable {
  readonly #pages: Pages;
  readonly #previous: Map<number, Uint8Array>;
  #closed = false;

  private constructor(p: Pages, previous: Map<number, Uint8Array>) {
    this.#pages = p;
    this.#previous = previous;
  }

  /**
   * Installs the handler for `signals` (process-wide, replacing their actions until `close`). The
   * relay starts with target `none`.
   *
   * @throws {KvmError} when the pages cannot be made or `sigaction` refuses a signal (the ones
   *   already installed are restored).
   */
  static install(signals: readonly number[]): SignalRelay {
    const p = makePages();
    const previous = new Map<number, Uint8Array>();
    // Every signal is blocked while the handler runs: it never nests within itself.
    const action = sigactionStruct(Deno.UnsafePointer.value(p.handler), true);
    const relay = new SignalRelay(p, previous);
    for (const signal of signals) {
      if (!Number.isInteger(signal) || signal < 1 || signal > 63) {
        relay.close();
        throw new RangeError(`SignalRelay: ${signal} is not a signal number from 1 to 63`);
      }
      const old = new Uint8Array(SIGACTION_SIZE);
      if (libc().sigaction(signal, action, old) < 0) {
        const errno = lastErrno();
        relay.close();
        throw new KvmError("sigaction", errno, { detail: `signal ${signal}` });
      }
      previous.set(signal, old);
    }
    return relay;
  }

  /**
   * Points the handler at `target`. Waits until no handler is between reading the old targets and
   * using them, so the old ones (a `kvm_run` page, an eventfd) may be released when this returns.
   */
  target(target: RelayTarget): void {
    const { words, cells } = this.#pages;
    Atomics.store(cells, P_DISABLED / 4, 1); // a locked store (xchg): a full fence
    const before = this.#countsSum();
    while (Atomics.load(cells, P_INFLIGHT / 4) !== 0) {
      // A handler is inside: it needs a few instructions more.
    }
    if (target.kind === "kick") {
      words[P_FLAG / 8] = target.flagAddress;
      words[P_NR / 8] = BigInt(SYS_TGKILL);
      words[P_ARG1 / 8] = BigInt(target.pid);
      words[P_ARG2 / 8] = BigInt(target.tid);
      words[P_ARG3 / 8] = BigInt(SIGUSR2);
    } else if (target.kind === "eventfd") {
      words[P_FLAG / 8] = this.#pages.params + BigInt(P_SPARE_BYTE);
      words[P_NR / 8] = BigInt(SYS_WRITE);
      words[P_ARG1 / 8] = BigInt(target.fd);
      words[P_ARG2 / 8] = this.#pages.params + BigInt(P_ONE);
      words[P_ARG3 / 8] = 8n;
    } else {
      disarm(this.#pages);
    }
    Atomics.store(cells, P_DISABLED / 4, 0);
    // A signal that came while the handler was disabled was counted but sent nothing: send it now.
    if (this.#countsSum() !== before) this.#fire(target);
  }

  #countsSum(): number {
    let sum = 0;
    for (const signal of this.#previous.keys()) sum += this.count(signal);
    return sum;
  }

  /** What the handler does for `target`, done from JavaScript. */
  #fire(target: RelayTarget): void {
    if (target.kind === "kick") {
      new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(target.flagAddress)!, 1),
      )[0] = 1;
      libc().tgkill(target.pid, target.tid, SIGUSR2);
    } else if (target.kind === "eventfd") {
      libc().write(target.fd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
    }
  }

  /** How many times `signal` arrived since the process first installed a relay. */
  count(signal: number): number {
    return Atomics.load(this.#pages.cells, P_COUNTS / 4 + signal);
  }

  /** Restores each signal's previous action and disarms the handler. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const [signal, old] of this.#previous) libc().sigaction(signal, old, null);
    this.target({ kind: "none" });
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Asks the kernel to send SIGIO to thread `tid` whenever input arrives on `fd` (`O_ASYNC` with
 * `F_SETOWN_EX`/`F_OWNER_TID`), for a {@link SignalRelay} of SIGIO. Returns the function that puts
 * the fd's flags and owner back; call it before the relay is closed. Works on terminals, pipes and
 * sockets; on a regular file or /dev/null there is never anything to wait for, and nothing is sent.
 *
 * @throws {KvmError} when `fcntl` refuses (a closed fd).
 */
export function signalOnInput(fd: number, tid: number): () => void {
  const { fcntl_int, fcntl_ptr } = libc();
  const flags = fcntl_int(fd, F_GETFL, 0n);
  if (flags < 0) throw new KvmError("fcntl", lastErrno(), { detail: `F_GETFL on fd ${fd}` });
  const oldOwner = new Uint8Array(8);
  fcntl_ptr(fd, F_GETOWN_EX, oldOwner);
  const oldSignal = Math.max(0, fcntl_int(fd, F_GETSIG, 0n));
  const owner = new Uint8Array(8);
  new DataView(owner.buffer).setInt32(0, F_OWNER_TID, true);
  new DataView(owner.buffer).setInt32(4, tid, true);
  const steps: [number, () => number][] = [
    [F_SETOWN_EX, () => fcntl_ptr(fd, F_SETOWN_EX, owner)],
    [F_SETSIG, () => fcntl_int(fd, F_SETSIG, 0n)], // the default: SIGIO
    [F_SETFL, () => fcntl_int(fd, F_SETFL, BigInt(flags | O_ASYNC))],
  ];
  const restore = () => {
    fcntl_int(fd, F_SETFL, BigInt(flags));
    fcntl_int(fd, F_SETSIG, BigInt(oldSignal));
    fcntl_ptr(fd, F_SETOWN_EX, oldOwner);
  };
  for (const [command, step] of steps) {
    const result = retryOnEintr(step);
    if (result < 0) {
      restore();
      throw new KvmError("fcntl", -result, { detail: `command ${command} on fd ${fd}` });
    }
  }
  return restore;
}
