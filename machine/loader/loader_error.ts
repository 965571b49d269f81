/**
 * The one error type of the boot loaders: an image that cannot be loaded. Callers branch on
 * `code`; the message is one line for the user, naming the format and the offending field.
 *
 * @module
 */

/** Why an image could not be loaded. */
export type LoaderErrorCode =
  /** The file ends before a header, a program header table or a segment it declares. */
  | "TRUNCATED"
  /** The Multiboot magic is present but no header has a valid checksum. */
  | "BAD_CHECKSUM"
  /** No Multiboot header in the first 8192 bytes. */
  | "NO_MULTIBOOT_HEADER"
  /** The Multiboot header requires a feature (flags bits 3-15) this loader does not know. */
  | "UNSUPPORTED_FLAGS"
  /**
   * A 64-bit ELF that cannot be loaded as what it is: a Multiboot image without the a.out kludge,
   * or (from `loadKernel`) a 64-bit ELF for another machine than x86-64.
   */
  | "ELF64"
  /** An x86-64 ELF without Linux's "Linux" ELF note: not a vmlinux. */
  | "NOT_LINUX"
  /** A malformed or unsupported ELF file (class, byte order, machine, segments). */
  | "BAD_ELF"
  /** Inconsistent a.out-kludge addresses (header_addr, load_addr, load_end_addr, bss_end_addr). */
  | "BAD_ADDRESS"
  /** The image (or an address the mode needs) is not inside guest RAM or the mode's reach. */
  | "DOES_NOT_FIT"
  /** The image overlaps what the loader writes itself (GDT, boot information, page tables). */
  | "OVERLAP"
  /** The command line or memory map does not fit in the space reserved for it. */
  | "BOOT_INFO_TOO_LARGE"
  /** Not a Linux bzImage: boot_flag 0xAA55 or the "HdrS" signature is missing. */
  | "BAD_MAGIC"
  /** A Linux boot protocol older than the loader needs (2.12, the first with the 64-bit entry). */
  | "PROTOCOL_TOO_OLD"
  /** A Linux bzImage without a 64-bit entry point (xloadflags bit 0, XLF_KERNEL_64, clear). */
  | "NO_64BIT_ENTRY"
  /** A Linux setup header field with an impossible value (e.g. kernel_alignment not a power of two). */
  | "BAD_HEADER"
  /** An initrd was given for a format that cannot take one (Multiboot modules are not supported). */
  | "INITRD_UNSUPPORTED"
  /** Not a format the loaders know. */
  | "UNKNOWN_FORMAT"
  /** A vmlinux without Xen's PHYS32_ENTRY ELF note: no PVH entry (boot its 64-bit entry instead). */
  | "NO_PVH_NOTE"
  /** An image file that changed since it was opened (a reset reads the kernel and initrd again). */
  | "CHANGED";

/**
 * Thrown by the loaders for an image they cannot load.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LoaderError } from "./loader_error.ts";
 * const error = new LoaderError("TRUNCATED", "multiboot: image is 3 bytes");
 * assert.equal(error.code, "TRUNCATED");
 * assert.equal(error.name, "LoaderError");
 * ```
 */
export class LoaderError extends Error {
  /** Machine-readable reason. */
  readonly code: LoaderErrorCode;

  /** An error with `code` and a one-line `message`. */
  constructor(code: LoaderErrorCode, message: string) {
    super(message);
    this.name = "LoaderError";
    this.code = code;
  }
}
