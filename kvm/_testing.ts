/**
 * Helpers shared by the KVM tests of this folder (not part of the public API).
 *
 * @module
 */

import assert from "node:assert/strict";
import { kvmAvailability } from "./kvm.ts";
import type { GuestMemory } from "./guest_memory.ts";
import type { Vcpu } from "./vcpu.ts";
import type { Vm } from "./vm.ts";
import { TUN_DEVICE_PATH } from "./tap.ts";
import { libc } from "./_libc.ts";

/** Whether /dev/kvm can be used here, probed once per test module. */
export const KVM = kvmAvailability();

/** `Deno.test` options that skip a test, visibly, when KVM is unavailable. */
export const ifKvm: { readonly ignore: boolean } = { ignore: !KVM.available };

/** Prints why the KVM tests of `module` are skipped (once per module). */
export function reportKvmSkip(module: string): void {
  if (!KVM.available) console.log(`${module}: KVM tests skipped: ${KVM.reason}`);
}

/** Maps all of `ram` at guest address 0 as slot 0, writable: the setup most tests start from. */
export function mapRam(vm: Vm, ram: GuestMemory): void {
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0n,
    memorySize: ram.size,
    userspaceAddr: ram.hostAddress,
  });
}

/** Real-mode segment limit (64 KiB). */
const REAL_MODE_LIMIT = 0xffff;
/** EFLAGS bit 1 is reserved and always set. */
const RFLAGS_RESERVED_BIT = 1n << 1n;

/**
 * Puts a vCPU in flat 16-bit real mode (every segment base and selector 0, limit 64 KiB) with
 * `rip = entry`. CS and RIP are always set explicitly: the reset CS differs between KVM
 * implementations (docs/kvm-abi.md §8).
 */
export function enterRealMode(vcpu: Vcpu, entry: number, registers: { rdx?: bigint } = {}): void {
  const sregs = vcpu.getSregs();
  const flat = <T extends { base: bigint; selector: number; limit: number }>(segment: T): T => ({
    ...segment,
    base: 0n,
    selector: 0,
    limit: REAL_MODE_LIMIT,
  });
  vcpu.setSregs({
    ...sregs,
    cs: flat(sregs.cs),
    ds: flat(sregs.ds),
    es: flat(sregs.es),
    fs: flat(sregs.fs),
    gs: flat(sregs.gs),
    ss: flat(sregs.ss),
  });
  const regs = vcpu.getRegs();
  vcpu.setRegs({ ...regs, rip: BigInt(entry), rflags: RFLAGS_RESERVED_BIT, rdx: registers.rdx ?? 0n });
}

/** Lines of /proc/self/maps. */
export function mappingCount(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((line) => line !== "").length;
}

/** This process's descriptors open on `path` (from /proc/self/fd). */
export function fdsOn(path: string): number[] {
  const real = Deno.realPathSync(path);
  return [...Deno.readDirSync("/proc/self/fd")].flatMap((entry) => {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${entry.name}`) === real ? [Number(entry.name)] : [];
    } catch {
      return []; // closed between the listing and the look
    }
  });
}

/** Adds 1 to the counter of the eventfd `fd`, as KVM does when a guest write matches an ioeventfd. */
export function signalEventfd(fd: number): void {
  const one = new Uint8Array(8);
  one[0] = 1;
  assert.equal(libc().write(fd, one, 8n), 8n, `write to eventfd ${fd}`);
}

/** What `/proc/self/fd/N` points at, or undefined when N is not open. */
export function fdTarget(fd: number): string | undefined {
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/** Entries of /proc/self/fd. */
export function fdCount(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/**
 * Pages the first run of a guest's code may leave in the dirty log besides the pages it wrote:
 * with kvm_amd under QEMU's emulated SVM (the nested KVM VM), the first fetch from a page shows up
 * as a write (observed: the code page is reported in the first round after logging starts, never
 * again), while kvm_pvm reports exactly the written pages.
 */
export function assertDirtyPages<T extends number | bigint>(
  actual: readonly T[],
  written: readonly T[],
  fetched: readonly T[],
  message?: string,
): void {
  const extra = actual.filter((page) => !written.includes(page));
  assert.deepEqual(
    written.filter((page) => !actual.includes(page)),
    [],
    `${message ?? "dirty pages"}: written pages missing from ${JSON.stringify(actual.map(String))}`,
  );
  assert.deepEqual(
    extra.filter((page) => !fetched.includes(page)),
    [],
    `${message ?? "dirty pages"}: pages the guest neither wrote nor ran code from`,
  );
}

/**
 * Why a test that runs the host program `name` cannot run here — `"<name> is missing (<why>)"` when
 * it cannot be started at all — or undefined. `args` are what it is started with to find out (its
 * status does not matter: some tools answer `-V` with 1).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { commandMissing } from "./_testing.ts";
 * assert.equal(commandMissing("sh", "the shell", ["-c", "exit 3"]), undefined);
 * assert.equal(commandMissing("no-such-tool-here", "apt-get install it"), "no-such-tool-here is missing (apt-get install it)");
 * ```
 */
export function commandMissing(
  name: string,
  why: string,
  args: readonly string[] = ["--version"],
): string | undefined {
  try {
    new Deno.Command(name, { args: [...args], stdin: "null", stdout: "null", stderr: "null" }).outputSync();
    return undefined;
  } catch {
    return `${name} is missing (${why})`;
  }
}

/**
 * Why a test that makes a tap cannot run here (no /dev/net/tun, not root, no iproute2), or
 * undefined. Shared by the tap tests of `kvm/` and the board's virtio-net test.
 */
export function tapSkipReason(): string | undefined {
  try {
    Deno.statSync(TUN_DEVICE_PATH);
  } catch {
    return `${TUN_DEVICE_PATH} is missing`;
  }
  if (Deno.uid() !== 0) return "creating a tap needs root (CAP_NET_ADMIN)";
  return commandMissing("ip", "iproute2", ["-V"]);
}

/** Runs `ip …` and returns its output, failing the test with its stderr. */
export function ip(...args: string[]): string {
  const out = new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).outputSync();
  const text = new TextDecoder();
  if (!out.success) throw new Error(`ip ${args.join(" ")}: ${text.decode(out.stderr)}`);
  return text.decode(out.stdout);
}

/** A network namespace of a test's own holding one tap; {@link tapInNamespace} makes it. */
export interface TapNamespace extends Disposable {
  /** The namespace's name (`ip netns exec NAME …` runs a program in it). */
  readonly namespace: string;
  /** The tap's name. */
  readonly tap: string;
}

/**
 * A new network namespace (`prefix` and a random suffix) with a tap `tap` in it — with the
 * virtio-net header (`vnet_hdr`), as QEMU's and this product's card want it —, `address` on it
 * (CIDR), and up, with the namespace's loopback up too. Disposing of it deletes the namespace, and the tap with it. Needs root (see
 * {@link tapSkipReason}).
 */
export function tapInNamespace(prefix: string, tap: string, address: string): TapNamespace {
  const namespace = `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
  ip("netns", "add", namespace);
  try {
    ip("-n", namespace, "link", "set", "dev", "lo", "up");
    ip("-n", namespace, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr");
    ip("-n", namespace, "addr", "add", address, "dev", tap);
    ip("-n", namespace, "link", "set", "dev", tap, "up");
  } catch (error) {
    try {
      ip("netns", "del", namespace);
    } catch {
      // the set-up's error is the one to report
    }
    throw error;
  }
  return { namespace, tap, [Symbol.dispose]: () => void ip("netns", "del", namespace) };
}
