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

  /** A runner of `vcpu` whose exits go to `spaces`. */
  constructor(vcpu: Vcpu, spaces: ExitSpaces) {
    this.#vcpu = vcpu;
    this.#spaces = spaces;
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
    this.#stop = null;
    // KVM_RUN with immediate_exit set returns before entering the guest: the hook runs first.
    if (hooks.startHeld) vcpu.setImmediateExit(true);
    for (;;) {
      const reason = vcpu.run();
      counts[reason & (EXIT_REASON_SLOTS - 1)]++;
      if (serveExit(page, view, spaces)) {
        this.#exits++;
      } else if (reason === KVM_EXIT_INTR) {
        // Clear the kick before looking for work, so a kick that comes now is not lost.
        vcpu.setImmediateExit(false);
        hooks.onKick?.();
      } else if (reason === KVM_EXIT_DEBUG && hooks.onDebug) {
        hooks.onDebug(vcpu.id);
      } else {
        this.stop(exitOutcome(page, vcpu.id, () => formatRegisters(vcpu.getRegs(), vcpu.getSregs())));
      }
      if (this.#stop) return this.#stop;
    }
  }
}
