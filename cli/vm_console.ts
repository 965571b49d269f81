/**
 * The console on the VM thread: the terminal's bytes, the Ctrl-A escapes and the signals that end
 * a run (SIGTERM, SIGHUP, SIGINT), all served by the thread that runs the VM, with no second isolate.
 *
 * How the thread hears of news while it sleeps (kvm/signal_relay.ts has the reasoning):
 * - One vCPU on this thread, inside `KVM_RUN`: the kernel sends SIGIO to this thread when input
 *   arrives (`O_ASYNC`), and the relay's handler turns SIGIO and the ending signals into a kick —
 *   `immediate_exit` set, then SIGUSR2 to this thread — so `KVM_RUN` returns and the runner's
 *   `onKick` calls {@link VmConsole.take}.
 * - Several vCPUs (this thread sleeps in poll(2)): stdin and the relay's eventfd are among the
 *   fds it waits on ({@link VmConsole.sources}).
 *
 * @module
 */

import { type HostFdSource } from "../machine/mod.ts";
import { EventFd } from "../kvm/event_fd.ts";
import { PollSet } from "../kvm/poll.ts";
import { SIGHUP, SIGINT, SIGIO, signalOnInput, SignalRelay, SIGTERM } from "../kvm/signal_relay.ts";
import { immediateExitAddress, type VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import { ConsoleKeys } from "./console_keys.ts";

/** The signals that end a run as QEMU's do (SHUTDOWN, reason host-signal), in the order checked. */
const ENDING_SIGNALS = [SIGTERM, SIGHUP, SIGINT] as const;
const STDIN = 0;
const READ_SIZE = 256;

/** What the terminal and the signals asked for since the last {@link VmConsole.take}. */
export interface ConsoleNews {
  /** Bytes for the guest's UART. */
  input: Uint8Array;
  /** Monitor lines (Ctrl-A c), in order. */
  commands: string[];
  /** Ctrl-A x. */
  quit: boolean;
  /** An ending signal's number, or null. */
  signal: number | null;
}

/** The answer of a {@link VmConsole.take} that found nothing: shared, and frozen so no caller changes it. */
const NO_NEWS: ConsoleNews = Object.freeze({
  input: new Uint8Array(0),
  commands: Object.freeze([]) as unknown as string[],
  quit: false,
  signal: null,
});

/** Where the console wakes the VM thread. */
export type ConsoleWake =
  /** The one vCPU runs on this thread. */
  | { kick: VcpuKickTarget }
  /** This thread sleeps in poll(2) on {@link VmConsole.sources}. */
  | { poll: true };

/** The console of one run; `close` puts the terminal's fd and the signals back. */
export class VmConsole implements Disposable {
  readonly #relay: SignalRelay;
  readonly #keys: ConsoleKeys;
  readonly #eventfd: EventFd | undefined;
  readonly #restoreInput: (() => void) | undefined;
  readonly #baseline: number[];
  readonly #poll = new PollSet(1);
  readonly #buffer = new Uint8Array(READ_SIZE);
  #eof = false;
  #closed = false;
  /** The SIGIO count stdin was last read at (-1: never read, so the first take reads). */
  #seenInput = -1;
  /** Poll said stdin is readable (a thread that sleeps in poll(2)). */
  #inputReady = false;

  /**
   * Takes over the ending signals and stdin for this thread. Input typed before this call is not
   * lost: the first {@link take} reads it.
   *
   * @throws {KvmError} when a signal or stdin's flags cannot be set (everything set is undone).
   */
  constructor(wake: ConsoleWake, write: (text: string) => void) {
    this.#keys = new ConsoleKeys(write);
    this.#relay = SignalRelay.install([...ENDING_SIGNALS, SIGIO]);
    this.#baseline = ENDING_SIGNALS.map((s) => this.#relay.count(s));
    try {
      if ("kick" in wake) {
        const { pid, tid } = wake.kick;
        this.#relay.target({ kind: "kick", pid, tid, flagAddress: immediateExitAddress(wake.kick) });
        // A regular file or /dev/null has no input to wait for; a terminal or a pipe signals.
        try {
          this.#restoreInput = signalOnInput(STDIN, wake.kick.tid);
        } catch {
          this.#restoreInput = undefined; // stdin closed: nothing will ever be typed
        }
      } else {
        this.#eventfd = new EventFd({ nonBlocking: true });
        this.#relay.target({ kind: "eventfd", fd: this.#eventfd.fd });
      }
    } catch (error) {
      this.#relay.close();
      this.#eventfd?.close();
      throw error;
    }
  }

  /**
   * For a thread that sleeps in poll(2): stdin (until its end) and the relay's eventfd. Serving
   * them is {@link take}'s work, which the runner's `onKick` does after each wake-up.
   */
  get sources(): HostFdSource[] {
    const eventfd = this.#eventfd;
    if (!eventfd) return [];
    return [
      { fd: STDIN, armed: () => !this.#eof, ready: () => void (this.#inputReady = true) },
      { fd: eventfd.fd, armed: () => true, ready: () => void eventfd.read() },
    ];
  }

  /**
   * Reads what stdin holds now (never blocks), runs the Ctrl-A keys, and reports the news. Stdin is
   * read only when there can be something: SIGIO came since the last read, or poll(2) said so. The
   * count is taken before the read, so input that arrives after it is read at the next call. With
   * neither, the call costs no system call (a multi-vCPU VM thread calls it after every wake-up).
   */
  take(): ConsoleNews {
    const signalled = this.#relay.count(SIGIO);
    const look = signalled !== this.#seenInput || this.#inputReady;
    const signal = this.#endingSignal();
    // The VM thread of a multi-vCPU run calls this after every wake-up (a queue notify, an exit):
    // with nothing new, no allocation at all.
    if (!look && signal === null) return NO_NEWS;
    const guest: number[] = [];
    const commands: string[] = [];
    let quit = false;
    this.#seenInput = signalled;
    this.#inputReady = false;
    while (look && !this.#eof && this.#readable()) {
      let n: number | null;
      try {
        n = Deno.stdin.readSync(this.#buffer);
      } catch {
        n = null; // not readable after all (closed): the guest runs on without input
      }
      if (n === null || n === 0) {
        this.#eof = true;
        break;
      }
      for (const byte of this.#buffer.subarray(0, n)) {
        const action = this.#keys.handle(byte);
        if (action.kind === "guest") guest.push(action.byte);
        else if (action.kind === "command") commands.push(action.line);
        else if (action.kind === "quit") quit = true;
      }
      if (quit) break;
    }
    return { input: Uint8Array.from(guest), commands, quit, signal };
  }

  /** The first ending signal (in {@link ENDING_SIGNALS}' order) that came since the start, or null. */
  #endingSignal(): number | null {
    for (let i = 0; i < ENDING_SIGNALS.length; i++) {
      if (this.#relay.count(ENDING_SIGNALS[i]) !== this.#baseline[i]) return ENDING_SIGNALS[i];
    }
    return null;
  }

  /** The monitor's prompt, after a command's output. */
  prompt(): void {
    this.#keys.prompt();
  }

  #readable(): boolean {
    this.#poll.setFd(0, STDIN);
    return this.#poll.wait(0) > 0;
  }

  /** Stdin's flags and owner back, the signals' old actions back; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#restoreInput?.();
    this.#relay.close(); // disarmed first: no handler writes to the vCPU's page after this
    this.#eventfd?.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
