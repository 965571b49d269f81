/**
 * Running several vCPUs: one Worker each with a synchronous `KVM_RUN` loop (machine/vcpu_worker.ts),
 * and the VM thread serving their port I/O and MMIO exits one at a time from their run pages.
 *
 * Why this design: the device models and the memory API are JavaScript objects, which isolates
 * cannot share; serving every exit on the one thread that owns them is QEMU's big lock made
 * structural — no device ever runs concurrently with itself or another. The exit data stays in
 * each vCPU's `kvm_run` mapping (process-wide memory): nothing is copied between threads, only a
 * doorbell and a state cell change hands (`_smp_protocol.ts`).
 *
 * @module
 */

import { DoorbellWait } from "../kvm/doorbell.ts";
import { ioapicEoiVector } from "../kvm/exit.ts";
import { KVM_EXIT_DEBUG, KVM_EXIT_IOAPIC_EOI } from "../kvm/ioctls.ts";
import { PollSet } from "../kvm/poll.ts";
import { type ExitSpaces, serveExit } from "../kvm/serve_exit.ts";
import type { Vcpu } from "../kvm/vcpu.ts";
import { vcpuHandleInit } from "../kvm/vcpu_handle.ts";
import { handleKickSignal, VcpuKicker } from "../kvm/vcpu_kicker.ts";
import { formatRegisters } from "./cpu_state.ts";
import {
  DONE,
  DOORBELL,
  EXIT_PENDING,
  EXIT_REASON_SLOTS,
  exitCountCell,
  EXTINT,
  EXTINT_VECTOR,
  FAILED,
  INTA_PENDING,
  PAUSE,
  RUNNING,
  smpBuffer,
  SPLIT_IRQCHIP,
  stateCell,
  STOP,
  STOPPED,
  tidCell,
  WAITING,
  WAKE_FD,
} from "./_smp_protocol.ts";
import { type Doorbell, exitOutcome, type Runner, type RunnerHooks, type RunOutcome } from "./runner.ts";
import type { VcpuWorkerInit } from "./vcpu_worker.ts";
import { bundledModule } from "./bundled_module.ts";

export type { Doorbell } from "./runner.ts";

/** Where `kvm_run.exit_reason` is in the run page. */
const EXIT_REASON_OFFSET = 8;
/** How long the VM thread sleeps in poll before looking around anyway (a safety net). */
const DOORBELL_TIMEOUT_MS = 200;
/** How long to wait for the vCPU Workers to leave after the run. */
const SHUTDOWN_TIMEOUT_MS = 5000;
/** The module each vCPU Worker runs. */
const VCPU_WORKER_URL = new URL("./vcpu_worker.ts", import.meta.url);

/**
 * A split irqchip's PIC, PIT and IOAPIC as the VM thread drives them in a threaded run
 * (`machine/pc/pc_split_irqchip.ts`): vCPU 0's INTA, the guest's EOIs, and the PIT's timer.
 */
export interface ThreadedIrqchip {
  /** The PIC's INT line: vCPU 0 should take an ExtINT. */
  readonly extIntPending: boolean;
  /** The INTA cycle: the vector vCPU 0 is given (`injectExtInt`). */
  extInt(): number;
  /** The guest EOI'd `vector` (`KVM_EXIT_IOAPIC_EOI` on any vCPU). */
  eoi(vector: number): void;
  /** Plays the PIT up to now (its host timer signals the VM thread, which ends its poll). */
  tick(): void;
}

/**
 * Serves a vCPU's pending exit on the VM thread: port I/O and MMIO through the one exit path, a
 * split irqchip's EOI through `irqchip`. False for any other exit (a debug exit, or one that ends
 * the run).
 */
function serveVcpuExit(
  page: Uint8Array,
  view: DataView,
  spaces: ExitSpaces,
  irqchip: ThreadedIrqchip | undefined,
): boolean {
  if (serveExit(page, view, spaces)) return true;
  if (!irqchip || view.getUint32(EXIT_REASON_OFFSET, true) !== KVM_EXIT_IOAPIC_EOI) return false;
  irqchip.eoi(ioapicEoiVector(page));
  return true;
}

/**
 * The VM thread's pass over every vCPU's state cell: each EXIT_PENDING exit is served from that
 * vCPU's run page through `spaces` (with the one exit path, `serveExit`; a split irqchip's EOI
 * through `irqchip`), then marked RUNNING and its thread woken; vCPU 0's INTA_PENDING gets the PIC's
 * vector (or -1); a vCPU STOPPED, FAILED or DONE is reported to `onStopped` with its state.
 * Returns the number of exits served. Allocates nothing beyond what `serveExit` does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fakeRunPage, writeIoExit } from "../kvm/mod.ts";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { EXIT_PENDING, RUNNING, smpBuffer, stateCell } from "./_smp_protocol.ts";
 * import { servePendingExits } from "./smp_runner.ts";
 * using io = new AddressSpace(MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS), "I/O");
 * using memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
 * const run = fakeRunPage();
 * const data = writeIoExit(run, { direction: "in", port: 0x80, size: 1 });
 * const cells = new Int32Array(smpBuffer(1));
 * cells[stateCell(0)] = EXIT_PENDING;
 * assert.equal(servePendingExits(cells, [run.page], [run.view], { memory, io }, () => {}), 1);
 * assert.equal(cells[stateCell(0)], RUNNING);
 * assert.equal(data[0], 0xff); // an unassigned port reads all-ones
 * ```
 */
export function servePendingExits(
  cells: Int32Array,
  pages: readonly Uint8Array[],
  views: readonly DataView[],
  spaces: ExitSpaces,
  onStopped: (index: number, state: number) => void,
  onDebug?: (index: number) => void,
  irqchip?: ThreadedIrqchip,
): number {
  let served = 0;
  for (let i = 0; i < pages.length; i++) {
    const cell = stateCell(i);
    const state = Atomics.load(cells, cell);
    if (state === EXIT_PENDING) {
      // The one exit path first; only what it does not serve (a debug exit) costs a second look.
      if (!serveVcpuExit(pages[i], views[i], spaces, irqchip)) {
        if (onDebug && views[i].getUint32(EXIT_REASON_OFFSET, true) === KVM_EXIT_DEBUG) onDebug(i);
        else onStopped(i, STOPPED);
      }
      served++;
      Atomics.store(cells, cell, RUNNING);
      Atomics.notify(cells, cell);
    } else if (state === INTA_PENDING) {
      Atomics.store(cells, EXTINT_VECTOR, irqchip?.extIntPending ? irqchip.extInt() : -1);
      // INT after the INTA (another request may be waiting): vCPU 0 reads it next, asking for the
      // window only while it is high; the VM thread's next look then has nothing to kick for.
      Atomics.store(cells, EXTINT, irqchip?.extIntPending ? 1 : 0);
      Atomics.store(cells, cell, RUNNING);
      Atomics.notify(cells, cell);
    } else if (state === STOPPED || state === FAILED || state === DONE) {
      onStopped(i, state);
    }
  }
  return served;
}

/** Started vCPU Workers, and how to wait for them. */
export interface VcpuWorkers {
  /** The Workers, one per vCPU. */
  readonly workers: readonly Worker[];
  /** Settles once every Worker has said it is ready, has finished, or has failed to load or run. */
  readonly ready: Promise<void>;
  /** Settles once every Worker has finished or failed. */
  readonly done: Promise<void>;
  /** What went wrong in the Workers (load errors, uncaught errors, failures they reported). */
  readonly failures: string[];
}

/**
 * Starts one Worker of module `url` per message of `inits` and posts each its message. A Worker
 * answers `{ ready: true }` once it runs, and `{ done: true, failure? }` when it leaves.
 */
export function startVcpuWorkers(url: URL, inits: readonly unknown[]): VcpuWorkers {
  const failures: string[] = [];
  const workers = inits.map(() => new Worker(bundledModule(url), { type: "module" }));
  const ready: Promise<void>[] = [];
  const done: Promise<void>[] = [];
  for (const worker of workers) {
    // A Worker that never loads sends no message, only an error event: it must settle both.
    let isReady!: () => void;
    let isDone!: () => void;
    ready.push(new Promise<void>((resolve) => isReady = resolve));
    done.push(new Promise<void>((resolve) => isDone = resolve));
    worker.addEventListener(
      "message",
      (e: MessageEvent<{ ready?: boolean; done?: boolean; failure?: string }>) => {
        if (e.data.failure) failures.push(e.data.failure);
        if (e.data.ready) isReady();
        if (e.data.done) {
          isReady();
          isDone();
        }
      },
    );
    worker.addEventListener("error", (e) => {
      failures.push(e.message);
      e.preventDefault();
      isReady();
      isDone();
    });
  }
  inits.forEach((init, i) => workers[i].postMessage(init));
  return {
    workers,
    ready: Promise.all(ready).then(() => {}),
    done: Promise.all(done).then(() => {}),
    failures,
  };
}

/**
 * Runs every vCPU of a machine on its own thread until an outcome.
 *
 * @example
 * ```ts ignore
 * const smp = new SmpRunner(vcpus, { memory, io });
 * const outcome = await smp.run({ onKick: takeConsoleInput });
 * ```
 */
export class SmpRunner implements Runner {
  readonly #vcpus: readonly Vcpu[];
  readonly #spaces: ExitSpaces;
  readonly #buffer: SharedArrayBuffer;
  readonly #cells: Int32Array;
  readonly #onStopped: (index: number, state: number) => void;
  readonly #wake: DoorbellWait;
  readonly #irqchip: ThreadedIrqchip | undefined;
  #stop: RunOutcome | null = null;
  #flush: (() => void) | null = null;
  #exits = 0;
  #running = false;
  #pauseDepth = 0;

  /**
   * A runner of `vcpus` (vCPU i on Worker i) whose exits go to `spaces`; with `irqchip` (a split
   * irqchip's PIC, PIT and IOAPIC, on this thread), vCPU 0 takes the PIC's interrupts.
   */
  constructor(vcpus: readonly Vcpu[], spaces: ExitSpaces, irqchip?: ThreadedIrqchip) {
    this.#vcpus = vcpus;
    this.#spaces = spaces;
    this.#irqchip = irqchip;
    this.#buffer = smpBuffer(vcpus.length);
    this.#cells = new Int32Array(this.#buffer);
    this.#wake = new DoorbellWait(this.#buffer, DOORBELL, WAITING);
    this.#cells[WAKE_FD] = this.#wake.doorbell.eventfd;
    this.#onStopped = (index, state) => {
      const vcpu = this.#vcpus[index];
      this.stop(
        state === STOPPED
          ? exitOutcome(vcpu.runPage, vcpu.id, () => formatRegisters(vcpu.getRegs(), vcpu.getSregs()))
          : { kind: "error", reason: `the thread of vCPU ${index} ended`, registers: "" },
      );
    };
  }

  /** Ring this to make the VM thread look at its hooks (input, monitor commands). */
  get doorbell(): Doorbell {
    return this.#wake.doorbell;
  }

  /** Calls `flush` at the start of each pass of the VM thread, before the exits it serves. */
  flushBeforeEachExit(flush: () => void): void {
    this.#flush = flush;
  }

  /**
   * Closes the doorbell's eventfd. Every thread that may ring must be fenced first (the front-end
   * closes its channels before the machine). Idempotent.
   */
  close(): void {
    this.#wake.close();
  }

  /** I/O and MMIO exits served so far, all vCPUs together. */
  get exits(): number {
    return this.#exits;
  }

  /** Per vCPU, its exits by `KVM_EXIT_*` reason, counted by its thread (live views of the cells). */
  get exitCounts(): readonly Uint32Array[] {
    return this.#vcpus.map((_, i) => new Uint32Array(this.#buffer, 4 * exitCountCell(i), EXIT_REASON_SLOTS));
  }

  /**
   * Runs `fn` with every vCPU held out of `KVM_RUN` (KVM keeps a vCPU's registers locked while it
   * runs, so reading them from this thread would wait for as long as the guest sleeps). Call it
   * from this thread during a run (a monitor command); outside a run it simply calls `fn`. Calls
   * nest (a register dump while the machine is stopped): only the outermost lets the vCPUs go.
   */
  withVcpusPaused<T>(fn: () => T): T {
    const cells = this.#cells;
    if (!this.#running || this.#pauseDepth > 0) {
      this.#pauseDepth++;
      try {
        return fn();
      } finally {
        this.#pauseDepth--;
      }
    }
    this.#pauseDepth++;
    Atomics.store(cells, PAUSE, 1);
    try {
      this.#kickAll();
      for (;;) {
        const seen = Atomics.load(cells, DOORBELL);
        // An I/O or MMIO exit that was waiting when the pause came is served now: its vCPU then
        // re-enters KVM_RUN with the kick's immediate_exit still set, which completes the
        // instruction (KVM finishes it only on the next KVM_RUN) and parks it. So every vCPU's
        // state is consistent inside `fn` (a snapshot reads it). A debug exit stays for its hook.
        this.#servePendingIo();
        const busy = this.#vcpus.some((_, i) => {
          const state = Atomics.load(cells, stateCell(i));
          return state === RUNNING || (state === EXIT_PENDING && !this.#debugExit(i));
        });
        if (!busy) break;
        Atomics.wait(cells, DOORBELL, seen, 50);
        this.#kickAll(); // a vCPU that was between runs when first kicked
      }
      return fn();
    } finally {
      this.#pauseDepth--;
      Atomics.store(cells, PAUSE, 0);
      Atomics.notify(cells, PAUSE);
    }
  }

  #debugExit(index: number): boolean {
    return this.#vcpus[index].runView.getUint32(EXIT_REASON_OFFSET, true) === KVM_EXIT_DEBUG;
  }

  #servePendingIo(): void {
    const cells = this.#cells;
    if (this.#flush !== null) this.#flush();
    this.#vcpus.forEach((vcpu, i) => {
      const cell = stateCell(i);
      if (Atomics.load(cells, cell) !== EXIT_PENDING || this.#debugExit(i)) return;
      if (serveVcpuExit(vcpu.runPage, vcpu.runView, this.#spaces, this.#irqchip)) this.#exits++;
      Atomics.store(cells, cell, RUNNING);
      Atomics.notify(cells, cell);
    });
  }

  /** The thread id of each vCPU's Worker (0 outside a run). */
  threadIds(): number[] {
    return this.#vcpus.map((_, i) => this.#running ? Atomics.load(this.#cells, tidCell(i)) : 0);
  }

  #kickAll(): void {
    this.#vcpus.forEach((_, i) => this.#kick(i));
  }

  #kick(index: number): void {
    const tid = Atomics.load(this.#cells, tidCell(index));
    if (tid !== 0) new VcpuKicker({ pid: Deno.pid, tid, runAddress: this.#vcpus[index].runAddress }).kick();
  }

  /**
   * A split irqchip's PIT played up to now, and its PIC's INT line published to vCPU 0, which is
   * kicked out of `KVM_RUN` when the line rises (a halted guest wakes for it; a vCPU between runs
   * sees `immediate_exit` and looks again).
   */
  #syncIrqchip(irqchip: ThreadedIrqchip): void {
    irqchip.tick();
    const high = irqchip.extIntPending ? 1 : 0;
    if (Atomics.exchange(this.#cells, EXTINT, high) === 0 && high === 1) this.#kick(0);
  }

  /** Ends the run after the exit being served (devices call it). The first outcome wins. */
  stop(outcome: RunOutcome): void {
    this.#stop ??= outcome;
  }

  /**
   * Starts the vCPU Workers and serves their exits until an outcome; then stops them all. A
   * Worker that fails to start ends the run with an error outcome naming the failure.
   */
  async run(hooks: RunnerHooks = {}): Promise<RunOutcome> {
    this.#stop = null;
    this.#cells.fill(0);
    this.#cells[WAKE_FD] = this.#wake.doorbell.eventfd;
    this.#cells[SPLIT_IRQCHIP] = this.#irqchip ? 1 : 0;
    this.#cells[EXTINT_VECTOR] = -1;
    // Held before the Workers exist: each thread checks PAUSE before its first KVM_RUN, and the
    // first pass of the serving loop calls onKick, whose pause (withVcpusPaused) releases them.
    if (hooks.startHeld) Atomics.store(this.#cells, PAUSE, 1);
    handleKickSignal(); // the shutdown kicks every vCPU thread
    const inits = this.#vcpus.map((vcpu, index): VcpuWorkerInit => ({
      vcpu: vcpuHandleInit(vcpu),
      index,
      cells: this.#buffer,
    }));
    const started = startVcpuWorkers(VCPU_WORKER_URL, inits);
    try {
      await started.ready;
      if (started.failures.length === 0) {
        this.#running = true;
        this.#serve(hooks);
      }
    } finally {
      this.#running = false;
      await this.#shutdown(started);
    }
    const outcome: RunOutcome = (this.#stop as RunOutcome | null) ?? { kind: "quit" };
    if (started.failures.length && outcome.kind !== "error") {
      return { kind: "error", reason: `a vCPU thread failed: ${started.failures.join("; ")}`, registers: "" };
    }
    return outcome;
  }

  /**
   * The VM thread's loop: serve pending exits, the readable host fds and the hooks, then sleep in
   * poll(2) on the doorbell's eventfd and the hooks' fds (kvm/doorbell.ts: a ring after `seen` was
   * read either moved the counter, which skips the sleep, or found WAITING set and wrote the
   * eventfd). A queue notify KVM signalled wakes this thread directly: no thread in between.
   */
  #serve(hooks: RunnerHooks): void {
    const cells = this.#cells;
    const pages = this.#vcpus.map((v) => v.runPage);
    const views = this.#vcpus.map((v) => v.runView);
    const spaces = this.#spaces;
    const onStopped = this.#onStopped;
    const sources = hooks.sources ?? [];
    const wake = this.#wake;
    const irqchip = this.#irqchip;
    const poll = new PollSet(1 + sources.length);
    for (;;) {
      const seen = wake.counter;
      // Writes the guest queued in the coalesced ring before these exits come first (and a queued
      // write no exit follows is played back within DOORBELL_TIMEOUT_MS).
      if (this.#flush !== null) this.#flush();
      this.#exits += servePendingExits(cells, pages, views, spaces, onStopped, hooks.onDebug, irqchip);
      hooks.onKick?.();
      if (this.#stop) return;
      // After the exits, input and fds that may have moved an interrupt line, and after the PIT's
      // timer signal ended the last poll (it repeats until re-armed: a signal just before the poll
      // cannot be lost).
      if (irqchip) this.#syncIrqchip(irqchip);
      for (let i = 0; i < sources.length; i++) poll.setFd(i + 1, sources[i].armed() ? sources[i].fd : -1);
      if (wake.wait(seen, poll, DOORBELL_TIMEOUT_MS) === 0) continue;
      for (let i = 0; i < sources.length; i++) if (poll.readable(i + 1)) sources[i].ready();
    }
  }

  /** Tells every Worker to leave, kicks each vCPU out of KVM_RUN, and waits for them. */
  async #shutdown(started: VcpuWorkers): Promise<void> {
    const cells = this.#cells;
    Atomics.store(cells, STOP, 1);
    this.#kickAll();
    Atomics.store(cells, EXTINT_VECTOR, -1);
    this.#vcpus.forEach((_, i) => {
      const cell = stateCell(i);
      const state = Atomics.load(cells, cell);
      if (state === EXIT_PENDING || state === INTA_PENDING) {
        Atomics.store(cells, cell, RUNNING); // unanswered: the Worker wakes, sees STOP and leaves
        Atomics.notify(cells, cell);
      }
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS));
    await Promise.race([started.done, timeout]);
    clearTimeout(timer);
    for (const worker of started.workers) worker.terminate();
    for (const vcpu of this.#vcpus) vcpu.setImmediateExit(false);
  }
}
