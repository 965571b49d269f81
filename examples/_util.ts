/**
 * Helpers shared by the example scripts of this folder (not part of the project's API): opening
 * /dev/kvm with a one-line failure, and assembling a guest of `guests/` with binutils.
 *
 * @module
 */

import {
  assemble,
  Kvm,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KvmError,
  type MemslotCall,
} from "../mod.ts";

/** `0x…` for addresses and values. */
export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

/** `KVM_MEM_*` flags by name. */
function memslotFlags(flags: number): string {
  const names = [];
  if (flags & KVM_MEM_LOG_DIRTY_PAGES) names.push("LOG_DIRTY_PAGES");
  if (flags & KVM_MEM_READONLY) names.push("READONLY");
  return names.join("|") || "0";
}

/** One `KVM_SET_USER_MEMORY_REGION` of the listener's trace hook as a line (size 0 deletes the slot). */
export function formatMemslotCall(call: MemslotCall): string {
  const result = call.error === undefined
    ? "ok"
    : call.error instanceof KvmError
    ? call.error.code
    : String(call.error);
  return `memslot: slot ${call.slot} flags ${memslotFlags(call.flags)} gpa ${hex(call.guestPhysAddr)} ` +
    `size ${hex(call.memorySize)}${call.memorySize === 0n ? " (delete)" : ""} -> ${result}`;
}

/** Prints `script: message` on stderr and exits with status 1. */
export function fail(script: string, message: string): never {
  console.error(`${script}: ${message}`);
  Deno.exit(1);
}

/**
 * Opens /dev/kvm, or exits with one line saying why it cannot: a {@link KvmError} (no device, no
 * access, wrong API version) or a missing `--allow-ffi`.
 */
export function openKvm(script: string): Kvm {
  try {
    return Kvm.open();
  } catch (error) {
    if (error instanceof KvmError) fail(script, `/dev/kvm is unusable: ${error.message}`);
    // Without --allow-ffi the KVM layer throws a plain Error whose cause is Deno's NotCapable.
    if (error instanceof Error && error.cause instanceof Deno.errors.NotCapable) fail(script, error.message);
    throw error;
  }
}

/**
 * Assembles `guests/<name>` (GNU as, AT&T syntax, `.code16` inside) and links it into a flat binary
 * whose first byte belongs at `base`. Needs `--allow-run=as,ld`, `--allow-write` and
 * `--allow-read` (a temporary directory).
 */
export async function assembleGuest(script: string, name: string, base: number): Promise<Uint8Array> {
  try {
    return await assemble(new URL(`./guests/${name}`, import.meta.url), { base, elf: 32 });
  } catch (error) {
    fail(script, (error as Error).message.split("\n")[0]);
  }
}
