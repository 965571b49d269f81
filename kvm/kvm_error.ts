/**
 * The one error type of the KVM layer: every failed syscall becomes a {@link KvmError} carrying
 * the errno, its symbolic name and the operation that failed.
 *
 * @module
 */

import { ERRNO_NAMES } from "./_errno.ts";

export { ERRNO_NAMES };

/** `"EINVAL"` for 22; `"E#<n>"` for an errno missing from {@link ERRNO_NAMES}. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno]?.[0] ?? `E#${errno}`;
}

/**
 * Pseudo-codes for failures that carry no errno (`errno` is 0 for them). They have no `E` prefix so
 * they cannot collide with an errno name.
 */
export const KVM_ERROR_PARTIAL = "PARTIAL";
/** {@link KvmError.code} when `KVM_GET_API_VERSION` is not 12. */
export const KVM_ERROR_BAD_API_VERSION = "BAD_API_VERSION";

/**
 * What to do about common failures, keyed by `op:code`. Sources: `Documentation/virt/kvm/api.rst`,
 * `virt/kvm/kvm_main.c` and the measurements in `docs/kvm-abi.md`.
 */
const HINTS: Readonly<Record<string, string>> = {
  "KVM_SET_USER_MEMORY_REGION:EINVAL": "guest_phys_addr, memory_size and userspace_addr must be " +
    "4 KiB aligned, the slot index below KVM_CAP_NR_MEMSLOTS, flags known; an existing slot may not change " +
    "its size, host address or READONLY flag in place (delete it with memory_size 0, then re-create it)",
  "KVM_SET_USER_MEMORY_REGION:EEXIST":
    "the guest-physical range overlaps another memslot of the same address space; delete or move that slot first",
  "KVM_SET_USER_MEMORY_REGION:EFAULT": "userspace_addr is not mapped in this process",
  "KVM_GET_DIRTY_LOG:ENOENT": "the slot does not exist or was created without KVM_MEM_LOG_DIRTY_PAGES",
  "KVM_CLEAR_DIRTY_LOG:EINVAL": "first_page must be a multiple of 64 and num_pages a multiple of 64 unless " +
    "the range ends at the slot's end; the VM needs KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled",
  "KVM_CLEAR_DIRTY_LOG:ENOENT": "the slot does not exist or was created without KVM_MEM_LOG_DIRTY_PAGES",
  "KVM_CREATE_IRQCHIP:EEXIST": "the VM already has an irqchip",
  "KVM_CREATE_IRQCHIP:EINVAL": "create the irqchip before the first vCPU",
  "KVM_CREATE_VCPU:EEXIST": "a vCPU with this id already exists in the VM",
  "KVM_CREATE_VCPU:EINVAL": "the vCPU id is at or above KVM_CAP_MAX_VCPU_ID, or too many vCPUs exist",
  "KVM_GET_SUPPORTED_CPUID:E2BIG": "the buffer holds too few entries",
  "KVM_RUN:EFAULT": "guest memory behind a memslot is no longer mapped in this process",
  "KVM_RUN:EINVAL": "the vCPU state is invalid (check the segments set with KVM_SET_SREGS)",
  // Measured on kvm_pvm (docs/kvm-abi.md §8): KVM_RUN of a VM without any memslot.
  "KVM_RUN:ENOSPC": "the VM has no memslot: map guest memory with KVM_SET_USER_MEMORY_REGION first",
  "KVM_SET_MSRS:PARTIAL": "the MSR is unknown to this KVM or the value is invalid for it",
  "KVM_GET_MSRS:PARTIAL": "the MSR is unknown to this KVM",
  "KVM_SET_GSI_ROUTING:EINVAL": "the VM needs an in-kernel irqchip; a pin must exist on its chip (PIC 0-7, " +
    "IOAPIC 0-23), a GSI may go to each chip once and an MSI GSI to nothing else, GSIs stay below 4096",
  "KVM_IRQFD:EINVAL": "the VM needs an in-kernel irqchip (a resample irqfd the full one, not a split one) " +
    "and the fd must be an eventfd",
  "KVM_IRQFD:EBUSY": "this eventfd is already attached to a GSI of this VM",
  "KVM_IOEVENTFD:EEXIST":
    "an ioeventfd with the same address, length and datamatch (or one matching any value) " +
    "is already registered",
  "KVM_IOEVENTFD:ENOENT":
    "no ioeventfd with exactly this fd, space, address, length and datamatch is registered",
  "KVM_IOEVENTFD:EINVAL": "the fd must be an eventfd; length 0, 1, 2, 4 or 8 (0 only without datamatch)",
  "KVM_IOEVENTFD:ENOSPC": "the VM's I/O bus is full (KVM allows about 1000 devices per bus)",
  "KVM_SIGNAL_MSI:EINVAL": "the VM needs an in-kernel irqchip, and flags must be 0 on x86",
  "KVM_INTERRUPT:ENXIO":
    "the VM's PIC is in the kernel (KVM_CREATE_IRQCHIP): its interrupts come from KVM_IRQ_LINE",
  "KVM_INTERRUPT:EEXIST": "an external interrupt is pending still: wait for KVM_EXIT_IRQ_WINDOW_OPEN",
  "mmap:ENOMEM": "the host cannot reserve that much address space (see `ulimit -v` and vm.overcommit_memory)",
};

/** Fields of a {@link KvmError} besides the operation. */
export interface KvmErrorOptions {
  /** Overrides the code derived from errno (used for the errno-less pseudo-codes). */
  readonly code?: string;
  /** Extra context for the message: the slot, the address, the path… */
  readonly detail?: string;
  /** Replaces the built-in hint for this `op:code`. */
  readonly hint?: string;
  /** The underlying error, if any. */
  readonly cause?: unknown;
}

/**
 * A failed KVM ioctl or syscall: `errno` as the kernel reported it, `code` its name (`"EINVAL"`)
 * and `op` the operation (`"KVM_SET_USER_MEMORY_REGION"`, `"mmap"`, `"open /dev/kvm"`).
 * Branch on `code`, never on the message text, which is for people.
 *
 * `errno` is 0 for failures the kernel reports without errno; their `code` is one of the
 * pseudo-codes {@link KVM_ERROR_PARTIAL} (an ioctl processed only a prefix of its entries) or
 * {@link KVM_ERROR_BAD_API_VERSION}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KvmError } from "./kvm_error.ts";
 * const error = new KvmError("KVM_SET_USER_MEMORY_REGION", 17, { detail: "slot 3" });
 * assert.ok(error.code === "EEXIST" && error.errno === 17);
 * assert.ok(error.message.startsWith("KVM_SET_USER_MEMORY_REGION failed (slot 3): EEXIST"));
 * ```
 */
export class KvmError extends Error {
  /** The errno value, or 0 for a pseudo-code. */
  readonly errno: number;
  /** `"EINVAL"`, `"EEXIST"`, …, or a pseudo-code such as {@link KVM_ERROR_PARTIAL}. */
  readonly code: string;
  /** The failed operation: an ioctl name, `"mmap"`, `"open /dev/kvm"`. */
  readonly op: string;

  /** An error for `op` failing with `errno` (0 with `options.code` for a pseudo-code). */
  constructor(op: string, errno: number, options: KvmErrorOptions = {}) {
    const code = options.code ?? errnoName(errno);
    const description = ERRNO_NAMES[errno]?.[1];
    const hint = options.hint ?? HINTS[`${op}:${code}`] ??
      (code === "EBADF" ? "the file descriptor is closed" : undefined);
    const where = options.detail === undefined ? "" : ` (${options.detail})`;
    const what = errno === 0 ? code : `${code} (errno ${errno}${description ? `, ${description}` : ""})`;
    super(`${op} failed${where}: ${what}${hint ? `: ${hint}` : ""}`, { cause: options.cause });
    this.name = "KvmError";
    this.errno = errno;
    this.code = code;
    this.op = op;
  }
}

/**
 * The error for a failed `open` of the KVM device, with what a person should do about it:
 * load the module when the device is missing, fix permissions when access is denied.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kvmOpenError } from "./kvm_error.ts";
 * const error = kvmOpenError("/dev/kvm", 13);
 * assert.ok(error.code === "EACCES" && error.message.includes("group kvm"));
 * ```
 */
export function kvmOpenError(path: string, errno: number): KvmError {
  const code = errnoName(errno);
  let hint: string | undefined;
  if (code === "ENOENT" || code === "ENODEV" || code === "ENXIO") {
    hint = `${path} does not exist: this host has no KVM. Enable hardware virtualization and load the ` +
      "module (`modprobe kvm_intel` or `modprobe kvm_amd`), or run on a host that offers nested KVM";
  } else if (code === "EACCES" || code === "EPERM") {
    hint = `no permission to open ${path} read-write: add the user to group kvm ` +
      "(`sudo usermod -aG kvm $USER`, then log in again) or run as root";
  } else if (code === "EBUSY") {
    hint = "another hypervisor holds the virtualization extensions (unload it, e.g. VirtualBox)";
  }
  return new KvmError(`open ${path}`, errno, { hint });
}

/**
 * What a failed `KVM_RUN` returned, for its error's detail: nothing to add for -1 (errno says why);
 * any other value means errno was not set by this call, which the message must say rather than
 * blame a stale errno on KVM. (Seen in the nested KVM VM: a rare `KVM_RUN failed: ENOENT` at a
 * Linux guest's start, not yet explained.)
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kvmRunResult } from "./kvm_error.ts";
 * assert.equal(kvmRunResult(-1), "");
 * assert.equal(kvmRunResult(1), ", returned 1, so errno is not its own");
 * ```
 */
export function kvmRunResult(result: number): string {
  return result === -1 ? "" : `, returned ${result}, so errno is not its own`;
}
