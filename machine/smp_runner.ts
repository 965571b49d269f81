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

import {
  type ExitSpaces,
  handleKickSignal,
  serveExit,
  type Vcpu,
  vcpuHandleInit,
  VcpuKicker,
} from "../kvm/mod.ts";
import {
  DONE,
  DOORBELL,
  EXIT_PENDING,
  FAILED,
  PAUSE,
  RUNNING,
  smpBuffer,
  stateCell,
  STOP,
  STOPPED,
  tidCell,
} from "./_smp_protocol.ts";
import { exitOutcome, type RunnerHooks, type RunOutcome } from "./vcpu_runner.ts";
import type { VcpuWorkerInit } from "./vcpu_worker.ts";

/** How long the VM thread sleeps on the doorbell before looking around anyway (a safety net). */
const DOORBELL_TIMEOUT_MS = 200;
/** How long to wait for the vCPU Workers to leave after the run. */
const SHUTDOWN_TIMEOUT_MS = 5000;

/** Where another thread rings to wake the VM thread (the console Worker uses it). */
export interface Doorbell {
  /** The shared cells. */
  readonly buffer: SharedArrayBuffer;
  /** Index of the doorbell cell in an Int32Array over it. */
  readonly index: number;
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
export class SmpRunner {
  readonly #vcpus: readonly Vcpu[];
  readonly #spaces: ExitSpaces;
  readonly #buffer: SharedArrayBuffer;
  readonly #cells: Int32Array;
  #stop: RunOutcome | null = null;
  #exits = 0;
  #running = false;

  constructor(vcpus: readonly Vcpu[], spaces: ExitSpaces) {
    this.#vcpus = vcpus;
    this.#spaces = spaces;
    this.#buffer = smpBuffer(vcpus.length);
    this.#cells = new Int32Array(this.#buffer);
  }

  /** Ring this to make the VM thread look at its hooks (input, monitor commands). */
  get doorbell(): Doorbell {
    return { buffer: this.#buffer, index: DOORBELL };
  }

  /** I/O and MMIO exits served so far, all vCPUs together. */
  get exits(): number {
    return this.#exits;
  }

  /**
   * Runs `fn` with every vCPU held out of `KVM_RUN` (KVM keeps a vCPU's registers locked while it
   * runs, so reading them from this thread would wait for as long as the guest sleeps). Call it
   * from this thread during a run (a monitor command); outside a run it simply calls `fn`.
   */
  withVcpusPaused<T>(fn: () => T): T {
    const cells = this.#cells;
    if (!this.#running) return fn();
    Atomics.store(cells, PAUSE, 1);
    try {
      this.#kickAll();
      for (;;) {
        const seen = Atomics.load(cells, DOORBELL);
        const inside = this.#vcpus.some((_, i) => Atomics.load(cells, stateCell(i)) === RUNNING);
        if (!inside) break;
        Atomics.wait(cells, DOORBELL, seen, 50);
        this.#kickAll(); // a vCPU that was between runs when first kicked
      }
      return fn();
    } finally {
      Atomics.store(cells, PAUSE, 0);
      Atomics.notify(cells, PAUSE);
    }
  }

  #kickAll(): void {
    this.#vcpus.forEach((vcpu, i) => {
      const tid = Atomics.load(this.#cells, tidCell(i));
      if (tid !== 0) new VcpuKicker({ pid: Deno.pid, tid, runAddress: vcpu.runAddress }).kick();
    });
  }

  /** Ends the run after the exit being served (devices call it). The first outcome wins. */
  stop(outcome: RunOutcome): void {
    this.#stop ??= outcome;
  }

  /** Starts the vCPU Workers and serves their exits until an outcome; then stops them all. */
  async run(hooks: RunnerHooks = {}): Promise<RunOutcome> {
    const cells = this.#cells;
    this.#stop = null;
    cells.fill(0);
    handleKickSignal(); // the shutdown kicks every vCPU thread
    const workers = this.#vcpus.map(() =>
      new Worker(new URL("./vcpu_worker.ts", import.meta.url), { type: "module" })
    );
    const failures: string[] = [];
    const done = workers.map((worker) =>
      new Promise<void>((resolve) => {
        worker.addEventListener("message", (e: MessageEvent<{ done?: boolean; failure?: string }>) => {
          if (e.data.failure) failures.push(e.data.failure);
          if (e.data.done) resolve();
        });
        worker.addEventListener("error", (e) => {
          failures.push(e.message);
          e.preventDefault();
          resolve();
        });
      })
    );
    try {
      const ready = workers.map((worker) =>
        new Promise<void>((resolve) => {
          worker.addEventListener("message", (e: MessageEvent<{ ready?: boolean; done?: boolean }>) => {
            if (e.data.ready || e.data.done) resolve();
          });
        })
      );
      this.#vcpus.forEach((vcpu, index) => {
        const init: VcpuWorkerInit = { vcpu: vcpuHandleInit(vcpu), index, cells: this.#buffer };
        workers[index].postMessage(init);
      });
      await Promise.all(ready);
      this.#running = true;
      this.#serve(hooks);
    } finally {
      this.#running = false;
      await this.#shutdown(workers, done);
    }
    const outcome: RunOutcome = (this.#stop as RunOutcome | null) ?? { kind: "quit" };
    if (failures.length && outcome.kind !== "error") {
      return { kind: "error", reason: `a vCPU thread failed: ${failures.join("; ")}`, registers: "" };
    }
    return outcome;
  }

  /** The VM thread's loop: sleep on the doorbell, serve pending exits, poll the hooks. */
  #serve(hooks: RunnerHooks): void {
    const cells = this.#cells;
    const pages = this.#vcpus.map((v) => v.runPage);
    const views = this.#vcpus.map((v) => v.runView);
    for (;;) {
      const seen = Atomics.load(cells, DOORBELL);
      for (let i = 0; i < this.#vcpus.length; i++) {
        const cell = stateCell(i);
        const state = Atomics.load(cells, cell);
        if (state === EXIT_PENDING) {
          serveExit(pages[i], views[i], this.#spaces);
          this.#exits++;
          Atomics.store(cells, cell, RUNNING);
          Atomics.notify(cells, cell);
        } else if (state === STOPPED) {
          this.stop(exitOutcome(this.#vcpus[i]));
        } else if (state === FAILED || state === DONE) {
          this.stop({ kind: "error", reason: `the thread of vCPU ${i} ended`, registers: "" });
        }
      }
      hooks.onKick?.();
      if (this.#stop) return;
      Atomics.wait(cells, DOORBELL, seen, DOORBELL_TIMEOUT_MS);
    }
  }

  /** Tells every Worker to leave, kicks each vCPU out of KVM_RUN, and waits for them. */
  async #shutdown(workers: Worker[], done: Promise<void>[]): Promise<void> {
    const cells = this.#cells;
    Atomics.store(cells, STOP, 1);
    this.#kickAll();
    this.#vcpus.forEach((_, i) => {
      const cell = stateCell(i);
      if (Atomics.load(cells, cell) === EXIT_PENDING) {
        Atomics.store(cells, cell, RUNNING); // unanswered: the Worker wakes, sees STOP and leaves
        Atomics.notify(cells, cell);
      }
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS));
    await Promise.race([Promise.all(done), timeout]);
    clearTimeout(timer);
    for (const worker of workers) worker.terminate();
    for (const vcpu of this.#vcpus) vcpu.setImmediateExit(false);
  }
}
