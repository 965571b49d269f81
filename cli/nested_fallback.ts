/**
 * The front-end on a host whose KVM cannot run the guest: the same command line, run again inside
 * the nested KVM VM (`nested/`), with this terminal as the guest's console.
 *
 * @module
 */

import { type HostKvm, hostKvm, kvmDeviceOpens } from "../kvm/host_kvm.ts";
import { NestedError, wokeLine } from "../nested/nested_error.ts";
import { bundledModule } from "../machine/bundled_module.ts";
import { START_FLAGS } from "./start_flags.ts";

/** Set inside the nested VM, so that a run there never nests again. */
const NESTED_ENV = "KVM_TS_NESTED";
/** Why a run without /dev/kvm goes to the nested VM. */
const NO_KVM = "no /dev/kvm here";

/**
 * Why this run must go to the nested VM, or undefined when it can run here: there is no /dev/kvm, or
 * the host's KVM is a software one (kvm_pvm) and the guest is a stock Linux kernel it cannot run.
 */
export function nestedReason(linuxGuest: boolean, kvm?: HostKvm): string | undefined {
  if (insideNestedVm()) return undefined;
  // Any KVM runs a guest that is not Linux: whether /dev/kvm opens is all that matters then, and
  // the CPU flags (a /proc/cpuinfo read) are not needed.
  if (kvm === undefined && !linuxGuest) return kvmDeviceOpens() ? undefined : NO_KVM;
  const host = kvm ?? hostKvm();
  if (host === "none") return NO_KVM;
  if (host === "software" && linuxGuest) return "this host's KVM (kvm_pvm) cannot run a stock Linux kernel";
  return undefined;
}

/**
 * The size of this process's terminal for the nested VM's command, or undefined when stdin is not a
 * terminal (80 × 24 when the size cannot be read).
 */
export function hostTerminalSize(): { rows: number; columns: number } | undefined {
  if (!Deno.stdin.isTerminal()) return undefined;
  try {
    return Deno.consoleSize();
  } catch {
    return { rows: 24, columns: 80 };
  }
}

function insideNestedVm(): boolean {
  try {
    return Deno.env.get(NESTED_ENV) === "1";
  } catch {
    return false; // no --allow-env: not started by the nested VM's job, which grants it
  }
}

/**
 * Runs `main.ts args` inside the nested VM and returns its exit status; `say` prints the one line
 * that tells the user where the run goes.
 *
 * @throws {NestedError} when the nested VM cannot be started or does not come back.
 */
export async function runMainNested(args: readonly string[], reason: string, say: (line: string) => void) {
  say(`${reason}: running inside a nested KVM VM under QEMU's emulator (slower)`);
  const mainModule = bundledModule(new URL("../main.ts", import.meta.url)).pathname;
  // Loaded only here: a run on this host's own KVM never needs the nested VM's code.
  const { runNested } = await import("../nested/nested_vm.ts");
  const result = await runNested({
    argv: [Deno.execPath(), "run", ...START_FLAGS, "--no-check", mainModule, ...args],
    env: Deno.env.toObject(),
    stdio: "inherit",
    terminal: hostTerminalSize(),
    onWake: (quiet) => say(wokeLine(quiet)),
  });
  return result.status;
}

export { NestedError };
