/**
 * What kind of KVM this host offers, found through libc (Deno's own file API reads device nodes
 * and /proc only with every permission, which the front-end and the test runner do not grant).
 *
 * @module
 */

import { libc } from "./_libc.ts";
import { closeFd, O_CLOEXEC, O_RDWR } from "./_syscalls.ts";

/**
 * `hardware`: /dev/kvm opens and the CPU has `vmx` or `svm` (kvm_intel/kvm_amd: stock kernels
 * run). `software`: /dev/kvm opens but the CPU has neither (kvm_pvm: guest ring 0 is emulated and
 * a stock Linux kernel cannot boot, docs/kvm-abi.md §8). `none`: no /dev/kvm this process can open.
 */
export type HostKvm = "hardware" | "software" | "none";

/** `O_RDONLY` (asm-generic/fcntl.h). */
const O_RDONLY = 0;
const READ_CHUNK = 64 * 1024;

/** A whole file read through libc, or undefined when it cannot be opened. */
function readSmallFile(path: string): string | undefined {
  const fd = libc().open(new TextEncoder().encode(`${path}\0`), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return undefined;
  try {
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(READ_CHUNK);
    for (;;) {
      const n = Number(libc().read(fd, buffer, BigInt(buffer.length)));
      if (n <= 0) break;
      chunks.push(buffer.slice(0, n));
    }
    const decoder = new TextDecoder();
    return chunks.map((c) => decoder.decode(c, { stream: true })).join("") + decoder.decode();
  } finally {
    closeFd(fd);
  }
}

/**
 * The host's KVM: whether /dev/kvm can be opened read-write and whether the CPU flags show
 * hardware virtualization. Never throws: without FFI permission it answers `none`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hostKvm } from "./host_kvm.ts";
 * assert.ok(["hardware", "software", "none"].includes(hostKvm()));
 * ```
 */
export function hostKvm(): HostKvm {
  if (!kvmDeviceOpens()) return "none";
  const flags = readSmallFile("/proc/cpuinfo")?.match(/^flags\s*:(.*)$/m)?.[1] ?? "";
  return /\b(vmx|svm)\b/.test(flags) ? "hardware" : "software";
}

/**
 * Whether this process can open /dev/kvm read-write: {@link hostKvm} is `none` when not. Cheaper
 * than it for a caller that does not need to know which KVM it is (no /proc/cpuinfo read). Never
 * throws: without FFI permission it answers false.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hostKvm, kvmDeviceOpens } from "./host_kvm.ts";
 * assert.equal(kvmDeviceOpens(), hostKvm() !== "none");
 * ```
 */
export function kvmDeviceOpens(): boolean {
  try {
    const fd = libc().open(new TextEncoder().encode("/dev/kvm\0"), O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    closeFd(fd);
    return true;
  } catch {
    return false; // no FFI permission: KVM cannot be used from this process either
  }
}
