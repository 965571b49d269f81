/**
 * Kernel format detection and the `-kernel FILE` entry point: which loader an image needs, and
 * one clear error line for anything no loader takes.
 *
 * @module
 */

import type { BootPlan } from "./boot_plan.ts";
import { LoaderError } from "./loader_error.ts";
import {
  findBadMultibootChecksum,
  findMultibootHeader,
  loadMultiboot,
  type MultibootOptions,
} from "./multiboot.ts";
import { hex, viewOf } from "./_plan.ts";

/** A kernel image format. */
export type KernelFormat = "multiboot" | "bzimage" | "elf64" | "unknown";

/** Offset of the Linux setup header's "HdrS" signature (boot.rst). */
const BZIMAGE_SIGNATURE_OFFSET = 0x202;
/** "HdrS", little-endian. */
const BZIMAGE_SIGNATURE = 0x5372_6448;
/** Offset of the boot protocol version. */
const BZIMAGE_VERSION_OFFSET = 0x206;
/** "\x7fELF", little-endian. */
const ELF_MAGIC = 0x464c_457f;
const ELF_CLASS_OFFSET = 4;
const ELF_CLASS_32 = 1;
const ELF_CLASS_64 = 2;
const ELF_MACHINE_OFFSET = 18;
/** The shortest file any supported format could be: the 12 bytes of a Multiboot header. */
const MIN_KERNEL_SIZE = 12;

/**
 * The format of a kernel image, checked in QEMU's order: a Linux bzImage ("HdrS" at 0x202)
 * first, then a valid Multiboot header in the first 8192 bytes, then a 64-bit ELF.
 *
 * @example
 * ```ts
 * import { detectFormat } from "./detect.ts";
 * import { FIRMWARE, HELLO64 } from "../guests/mod.ts";
 * console.assert(detectFormat(HELLO64) === "multiboot");
 * console.assert(detectFormat(FIRMWARE) === "unknown");
 * ```
 */
export function detectFormat(image: Uint8Array): KernelFormat {
  const view = viewOf(image);
  if (
    image.length >= BZIMAGE_SIGNATURE_OFFSET + 4 &&
    view.getUint32(BZIMAGE_SIGNATURE_OFFSET, true) === BZIMAGE_SIGNATURE
  ) {
    return "bzimage";
  }
  if (findMultibootHeader(image) !== undefined) return "multiboot";
  if (
    image.length > ELF_CLASS_OFFSET && view.getUint32(0, true) === ELF_MAGIC &&
    image[ELF_CLASS_OFFSET] === ELF_CLASS_64
  ) {
    return "elf64";
  }
  return "unknown";
}

/**
 * Loads a kernel image for `-kernel FILE`: Multiboot images through {@link loadMultiboot};
 * everything else throws a {@link LoaderError} whose message is one line saying what the file is
 * and why it cannot be loaded (bzImage: not yet; 64-bit ELF without a Multiboot header; bad
 * Multiboot checksum; truncated or unknown file).
 *
 * @example
 * ```ts
 * import { loadKernel } from "./detect.ts";
 * import { EXIT_STATUS } from "../guests/mod.ts";
 * const plan = loadKernel(EXIT_STATUS, { e820: [], ramSize: 0x800_0000n });
 * console.assert(plan.cpu.rip === 0x100020n);
 * ```
 */
export function loadKernel(image: Uint8Array, options: MultibootOptions): BootPlan {
  const view = viewOf(image);
  switch (detectFormat(image)) {
    case "multiboot":
      return loadMultiboot(image, options);
    case "bzimage": {
      const version = image.length >= BZIMAGE_VERSION_OFFSET + 2
        ? view.getUint16(BZIMAGE_VERSION_OFFSET, true)
        : 0;
      throw new LoaderError(
        "BZIMAGE_UNSUPPORTED",
        `kernel: Linux bzImage (boot protocol ${version >> 8}.${
          (version & 0xff).toString().padStart(2, "0")
        }) ` +
          `detected; loading bzImages is not supported yet`,
      );
    }
    case "elf64": {
      const machine = image.length >= ELF_MACHINE_OFFSET + 2 ? view.getUint16(ELF_MACHINE_OFFSET, true) : 0;
      throw new LoaderError(
        "ELF64",
        `kernel: 64-bit ELF (machine ${machine}) without a Multiboot header: not supported; Multiboot needs ` +
          `ELF32 or the a.out kludge (QEMU refuses x86-64 images too)`,
      );
    }
    case "unknown": {
      const bad = findBadMultibootChecksum(image);
      if (bad !== undefined) {
        throw new LoaderError(
          "BAD_CHECKSUM",
          `kernel: Multiboot magic at offset ${hex(bad.offset)} but the checksum is wrong ` +
            `(magic + flags + checksum = ${hex(bad.sum)}, not 0)`,
        );
      }
      if (image.length < MIN_KERNEL_SIZE) {
        throw new LoaderError(
          "TRUNCATED",
          `kernel: the file is ${image.length} bytes, too short to be a kernel`,
        );
      }
      if (view.getUint32(0, true) === ELF_MAGIC && image[ELF_CLASS_OFFSET] === ELF_CLASS_32) {
        throw new LoaderError(
          "UNKNOWN_FORMAT",
          "kernel: 32-bit ELF without a Multiboot header: not supported (add a Multiboot header)",
        );
      }
      throw new LoaderError(
        "UNKNOWN_FORMAT",
        'kernel: unknown format: no Multiboot header in the first 8192 bytes, no Linux "HdrS" at 0x202, ' +
          "not an ELF file",
      );
    }
  }
}
