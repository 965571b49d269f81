/**
 * What every vCPU runner offers the board and the front-end — one vCPU on this thread
 * (`VcpuRunner`) or one thread per vCPU (`SmpRunner`) — and why a run ended.
 *
 * @module
 */

import type { Doorbell } from "../kvm/doorbell.ts";
import { decodeExit } from "../kvm/exit.ts";
import { KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN } from "../kvm/ioctls.ts";

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

/** Hooks into a run. */
export interface RunnerHooks {
  /** Called after another thread kicked the vCPU or rang the doorbell (input, a monitor command). */
  onKick?(): void;
  /**
   * Called on the thread that serves exits when vCPU `cpu` left `KVM_RUN` with `KVM_EXIT_DEBUG` (a
   * debugger's breakpoint, watchpoint or single step; only after `KVM_SET_GUEST_DEBUG` enabled one).
   * The vCPU stays out of `KVM_RUN` until it returns. Without it such an exit ends the run.
   */
  onDebug?(cpu: number): void;
  /**
   * Whether no vCPU may execute a guest instruction before the first {@link onKick} (QEMU's `-S`,
   * or a run reset while stopped): the run starts with that call, every vCPU held out of `KVM_RUN`.
   */
  startHeld?: boolean;
  /**
   * Host fds the serving thread waits on with its doorbell; each readable one is served through its
   * `ready`. Only a runner with a doorbell waits on them (one vCPU on the calling thread sleeps in
   * `KVM_RUN`: its fds need a Worker that kicks it, `NetRxPoller`).
   */
  sources?: readonly HostFdSource[];
}

/**
 * A host fd the thread that serves exits waits on beside its doorbell (a runner with a doorbell:
 * that thread sleeps in poll(2) between exits). A queue notify eventfd, a tap.
 */
export interface HostFdSource {
  /** The fd. */
  readonly fd: number;
  /** Whether to wait on it now (a tap whose frames the guest cannot take yet is left out). */
  armed(): boolean;
  /** It was readable: serve it (called on the serving thread before {@link RunnerHooks.onKick}). */
  ready(): void;
}

/** Runs a machine's vCPUs until an outcome; the board sees only this. */
export interface Runner {
  /** I/O and MMIO exits served so far, all vCPUs together. */
  readonly exits: number;
  /** Per vCPU, its `KVM_RUN` returns so far by `KVM_EXIT_*` reason (index = reason; live views). */
  readonly exitCounts: readonly Uint32Array[];
  /**
   * Where another thread rings to have {@link RunnerHooks.onKick} run during a run; null when the
   * vCPU runs on this thread, which is woken by kicking the vCPU instead.
   */
  readonly doorbell: Doorbell | null;
  /**
   * Runs until an outcome. A runner with no doorbell returns the outcome itself, having run on
   * this thread; one with a doorbell returns a promise.
   */
  run(hooks?: RunnerHooks): RunOutcome | Promise<RunOutcome>;
  /** Ends the run after the exit being served (devices call it). The first outcome wins. */
  stop(outcome: RunOutcome): void;
  /** Runs `fn` while no vCPU is inside `KVM_RUN` (to read registers during a run). */
  withVcpusPaused<T>(fn: () => T): T;
  /**
   * Calls `flush` on the serving thread before each exit is served (and at least every 200 ms
   * where that thread waits on a doorbell), from now on: the coalesced ring's playback once writes
   * to any port may be queued in it (`KvmCoalescedListener.mergeSplitZones`).
   */
  flushBeforeEachExit(flush: () => void): void;
  /** The host thread id of each vCPU (0 for one whose thread is not running). */
  threadIds(): number[];
  /** Releases what the runner owns (the doorbell's eventfd); after the last run. Idempotent. */
  close(): void;
}

export type { Doorbell } from "../kvm/doorbell.ts";

/** A register dump (see `formatRegisters`) that shows the architectural reset state: CS:IP f000:fff0. */
const RESET_STATE = /\nRIP=000000000000fff0 [\s\S]*\nCS =f000 00000000ffff0000 /;
/** Added to a triple fault's reason when the registers read back are the reset state. */
export const RESET_STATE_NOTE =
  "this KVM reset the vCPU on the shutdown (as kvm_amd does): the registers below are the reset state, not the faulting context";

/**
 * Why a run must end, from the run page of a vCPU whose last exit was neither port I/O nor MMIO.
 * `registers` dumps the vCPU's registers for failures (call it on a vCPU outside `KVM_RUN`); if it
 * throws, the outcome says so instead. `cpu` other than 0 is named in the reason.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fakeRunPage, KVM_EXIT_SHUTDOWN, writeExitReason } from "../kvm/mod.ts";
 * import { exitOutcome } from "./runner.ts";
 * const run = fakeRunPage();
 * writeExitReason(run, KVM_EXIT_SHUTDOWN);
 * assert.deepEqual(exitOutcome(run.page, 1, () => "RAX=0"), {
 *   kind: "error",
 *   reason: "vCPU 1: triple fault (KVM_EXIT_SHUTDOWN)",
 *   registers: "RAX=0",
 * });
 * ```
 */
export function exitOutcome(page: Uint8Array, cpu: number, registers: () => string): RunOutcome {
  const exit = decodeExit(page);
  const error = (reason: string): RunOutcome => {
    let dump: string;
    try {
      dump = registers();
    } catch (e) {
      dump = `(registers unavailable: ${(e as Error).message})`;
    }
    return { kind: "error", reason: cpu === 0 ? reason : `vCPU ${cpu}: ${reason}`, registers: dump };
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
    case "shutdown": {
      const outcome = error("triple fault (KVM_EXIT_SHUTDOWN)");
      // kvm_amd puts the vCPU through INIT on a shutdown, so what is read back is the reset state, not
      // the context that faulted (kvm_intel and kvm_pvm keep it). Say so rather than show a misleading RIP.
      if (outcome.kind === "error" && RESET_STATE.test(outcome.registers ?? "")) {
        return { ...outcome, reason: `${outcome.reason}; ${RESET_STATE_NOTE}` };
      }
      return outcome;
    }
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
