/**
 * The vCPU loop: `KVM_RUN`, serve port I/O and MMIO through the address spaces, and stop with a
 * typed outcome on everything that ends a run (debug-exit, reset, triple fault, failed entry,
 * emulation failure). Runs on the thread that owns the address spaces and devices.
 *
 * @module
 */

import { KVM_EXIT_DEBUG, KVM_EXIT_INTR } from "../kvm/ioctls.ts";
import { type ExitSpaces, serveExit } from "../kvm/serve_exit.ts";
import type { Vcpu } from "../kvm/vcpu.ts";
import { currentThread } from "../kvm/vcpu_kicker.ts";
import { formatRegisters } from "./cpu_state.ts";
import { EXIT_REASON_SLOTS } from "./_smp_protocol.ts";
import { exitOutcome, type Runner, type RunnerHooks, type RunOutcome } from "./runner.ts";

export type { RunnerHooks, RunOutcome } from "./runner.ts";

/**
 * The VMM's own interrupt controllers around each `KVM_RUN` of a split irqchip (the LAPIC in the
 * kernel; the PIC, IOAPIC and PIT here): what to do before entering the guest (play the PIT up to
 * now, give the PIC's vector or ask for the interrupt window), and the exits that are theirs.
 */
export interface UserspaceIrqchip {
  /** Before each `KVM_RUN` of the vCPU. */
  beforeRun(vcpu: Vcpu): void;
  /** An exit neither the address spaces nor the runner serve; true when it was the irqchip's. */
  exit(reason: number, page: Uint8Array): boolean;
}

/**
 * Runs one vCPU until something ends the run.
 *
 * @example
 * ```ts ignore
 * const runner = new VcpuRunner(vcpu, { memory, io });
 * debugExit.onExit = (status) => runner.stop({ kind: "exit", status });
 * const outcome = runner.run();
 * ```
 */
export class VcpuRunner implements Runner {
  readonly #vcpu: Vcpu;
  readonly #spaces: ExitSpaces;
  #stop: RunOutcome | null = null;
  #exits = 0;
  readonly #counts = new Uint32Array(EXIT_REASON_SLOTS);
  readonly #irqchip: UserspaceIrqchip | null;
  #flush: (() => void) | null = null;

  /**
   * A runner of `vcpu` whose exits go to `spaces`; with `irqchip`, a split irqchip's userspace part
   * runs around each `KVM_RUN`.
   */
  constructor(vcpu: Vcpu, spaces: ExitSpaces, irqchip: UserspaceIrqchip | null = null) {
    this.#vcpu = vcpu;
    this.#spaces = spaces;
    this.#irqchip = irqchip;
  }

  /** Number of I/O and MMIO exits served so far. */
  get exits(): number {
    return this.#exits;
  }

  /** The vCPU's exits so far, by `KVM_EXIT_*` reason (index = reason). */
  get exitCounts(): readonly Uint32Array[] {
    return [this.#counts];
  }

  /** Null: the vCPU runs on this thread; another thread kicks it (`VcpuKicker`) to be heard. */
  get doorbell(): null {
    return null;
  }

  /** Calls `fn`: between runs and during a hook, the one vCPU is outside `KVM_RUN` already. */
  withVcpusPaused<T>(fn: () => T): T {
    return fn();
  }

  /** The one vCPU runs on the thread that calls {@link run}: this one. */
  threadIds(): number[] {
    return [currentThread().tid];
  }

  /** Calls `flush` after each `KVM_RUN` returns, before its exit is served. */
  flushBeforeEachExit(flush: () => void): void {
    this.#flush = flush;
  }

  /** Nothing to release: the vCPU is the caller's. */
  close(): void {}

  /** Ends the run after the current exit (devices call it from their handlers). The first wins. */
  stop(outcome: RunOutcome): void {
    this.#stop ??= outcome;
  }

  /** Runs until an outcome; can be called again after it returned (a restart after reset). */
  run(hooks: RunnerHooks = {}): RunOutcome {
    const vcpu = this.#vcpu;
    const page = vcpu.runPage;
    const view = vcpu.runView;
    const spaces = this.#spaces;
    const counts = this.#counts;
    const irqchip = this.#irqchip;
    this.#stop = null;
    // KVM_RUN with immediate_exit set returns before entering the guest: the hook runs first.
    if (hooks.startHeld) vcpu.setImmediateExit(true);
    for (;;) {
      irqchip?.beforeRun(vcpu);
      const reason = vcpu.run();
      if (this.#flush !== null) this.#flush(); // writes the guest queued before this exit come first
      counts[reason & (EXIT_REASON_SLOTS - 1)]++;
      if (serveExit(page, view, spaces)) {
        this.#exits++;
      } else if (reason === KVM_EXIT_INTR) {
        // Clear the kick before looking for work, so a kick that comes now is not lost.
        vcpu.setImmediateExit(false);
        hooks.onKick?.();
      } else if (reason === KVM_EXIT_DEBUG && hooks.onDebug) {
        hooks.onDebug(vcpu.id);
      } else if (irqchip?.exit(reason, page)) {
        // the interrupt window opened, or the guest EOI'd a level-triggered IOAPIC vector
      } else {
        this.stop(exitOutcome(page, vcpu.id, () => formatRegisters(vcpu.getRegs(), vcpu.getSregs())));
      }
      if (this.#stop) return this.#stop;
    }
  }
}
