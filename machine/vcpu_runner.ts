/**
 * The vCPU loop: `KVM_RUN`, serve port I/O and MMIO through the address spaces, and stop with a
 * typed outcome on everything that ends a run (debug-exit, reset, triple fault, failed entry,
 * emulation failure). Runs on the thread that owns the address spaces and devices.
 *
 * @module
 */

import {
  decodeExit,
  type ExitSpaces,
  KVM_EXIT_INTR,
  KVM_SYSTEM_EVENT_CRASH,
  KVM_SYSTEM_EVENT_RESET,
  KVM_SYSTEM_EVENT_SHUTDOWN,
  serveExit,
  type Vcpu,
} from "../kvm/mod.ts";
import { formatRegisters } from "./cpu_state.ts";

/** Why a run ended. */
export type RunOutcome =
  /** The guest wrote `value` to the debug-exit port: status `(value << 1) | 1`, as QEMU. */
  | { kind: "exit"; status: number }
  /** The guest reset the machine (i8042 0xfe, port 0xcf9, port 0x92, or a KVM reset event). */
  | { kind: "reset" }
  /** The guest powered off (KVM system event). */
  | { kind: "poweroff" }
  /** The user asked to quit (monitor `quit`, Ctrl-A x). */
  | { kind: "quit" }
  /** The run failed: triple fault, failed entry, emulation failure, or an exit nobody handles. */
  | { kind: "error"; reason: string; registers: string };

/** Hooks into the loop. */
export interface RunnerHooks {
  /** Called after another thread kicked the vCPU (input arrived, a monitor command is waiting). */
  onKick?(): void;
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
export class VcpuRunner {
  readonly #vcpu: Vcpu;
  readonly #spaces: ExitSpaces;
  #stop: RunOutcome | null = null;
  #exits = 0;

  constructor(vcpu: Vcpu, spaces: ExitSpaces) {
    this.#vcpu = vcpu;
    this.#spaces = spaces;
  }

  /** Number of I/O and MMIO exits served so far. */
  get exits(): number {
    return this.#exits;
  }

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
    this.#stop = null;
    for (;;) {
      const reason = vcpu.run();
      if (serveExit(page, view, spaces)) {
        this.#exits++;
      } else if (reason === KVM_EXIT_INTR) {
        // Clear the kick before looking for work, so a kick that comes now is not lost.
        vcpu.setImmediateExit(false);
        hooks.onKick?.();
      } else {
        this.stop(exitOutcome(vcpu));
      }
      if (this.#stop) return this.#stop;
    }
  }
}

/**
 * Why a run must end, from a vCPU whose last exit was neither port I/O nor MMIO: decodes its run
 * page and, for failures, dumps its registers. Call it on a stopped vCPU (not inside `KVM_RUN`).
 */
export function exitOutcome(vcpu: Vcpu): RunOutcome {
  const exit = decodeExit(vcpu.runPage);
  const error = (reason: string): RunOutcome => {
    let registers: string;
    try {
      registers = formatRegisters(vcpu.getRegs(), vcpu.getSregs());
    } catch (e) {
      registers = `(registers unavailable: ${(e as Error).message})`;
    }
    return { kind: "error", reason: vcpu.id === 0 ? reason : `vCPU ${vcpu.id}: ${reason}`, registers };
  };
  switch (exit.kind) {
    case "systemEvent":
      if (exit.type === KVM_SYSTEM_EVENT_RESET) return { kind: "reset" };
      if (exit.type === KVM_SYSTEM_EVENT_SHUTDOWN) return { kind: "poweroff" };
      return error(
        exit.type === KVM_SYSTEM_EVENT_CRASH
          ? "guest crashed (KVM system event)"
          : `system event ${exit.type}`,
      );
    case "shutdown":
      return error("triple fault (KVM_EXIT_SHUTDOWN)");
    case "failEntry":
      return error(`KVM_EXIT_FAIL_ENTRY, hardware reason 0x${exit.reason.toString(16)} on CPU ${exit.cpu}`);
    case "internalError":
      return error(
        `KVM_EXIT_INTERNAL_ERROR, suberror ${exit.suberror}${
          exit.suberror === 1 ? " (emulation failure)" : ""
        }, data [${exit.data.map((d) => `0x${d.toString(16)}`).join(", ")}]`,
      );
    case "hlt":
      return error("the guest halted with no interrupt controller to wake it (KVM_EXIT_HLT)");
    default:
      return error(`unhandled exit ${exit.kind}`);
  }
}
