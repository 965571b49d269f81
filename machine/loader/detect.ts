/**
 * Kernel format detection and the `-kernel FILE` entry point: which loader an image needs, and
 * one clear error line for anything no loader takes.
 *
 * @module
 */

import type { BootPlan } from "./boot_plan.ts";
import type { LinuxOptions } from "./_linux_boot.ts";
import { LoaderError } from "./loader_error.ts";
import {
  findBadMultibootChecksum,
  findMultibootHeader,
  loadMultiboot,
  MULTIBOOT_SEARCH_SIZE,
} from "./multiboot.ts";
import { EM_X86_64, hex, viewOf } from "./_plan.ts";
import { type ImageSource, imageSource, readHead } from "./image_source.ts";

/**
 * What {@link loadKernel} needs: the board's memory map and RAM size, the command line, and an
 * optional initrd (Linux only; a Multiboot kernel with an initrd is refused).
 */
export type KernelOptions = LinuxOptions;

/** A kernel image format. */
export type KernelFormat = "multiboot" | "bzimage" | "elf64" | "unknown";

/** Offset of the Linux setup header's "HdrS" signature (boot.rst). */
const BZIMAGE_SIGNATURE_OFFSET = 0x202;
/** "HdrS", little-endian. */
const BZIMAGE_SIGNATURE = 0x5372_6448;
/** "\x7fELF", little-endian. */
const ELF_MAGIC = 0x464c_457f;
const ELF_CLASS_OFFSET = 4;
const ELF_CLASS_32 = 1;
const ELF_CLASS_64 = 2;
const ELF_MACHINE_OFFSET = 18;
/** The shortest file any supported format could be: the 12 bytes of a Multiboot header. */
const MIN_KERNEL_SIZE = 12;

/**
 * The format of a kernel image, checked in QEMU's order (`x86_load_linux` in hw/i386/x86.c): a
 * Linux bzImage ("HdrS" at 0x202) first, then a valid Multiboot header in the first 8192 bytes,
 * then a 64-bit ELF (QEMU's PVH ELF boot; here an x86-64 Linux vmlinux).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { detectFormat } from "./detect.ts";
 * import { FIRMWARE, HELLO64 } from "../guests/mod.ts";
 * assert.equal(detectFormat(HELLO64), "multiboot");
 * assert.equal(detectFormat(FIRMWARE), "unknown");
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
 * How many leading bytes of a kernel file {@link detectFormat} and {@link probeKernel} look at: the
 * Multiboot search area, which also holds the Linux setup header's signature (0x202) and the ELF
 * header. A front-end reads this much first and the whole file only when it will be loaded.
 */
export const KERNEL_PROBE_SIZE: number = MULTIBOOT_SEARCH_SIZE;

/**
 * The loadable format of a kernel file, from its first {@link KERNEL_PROBE_SIZE} bytes (or the
 * whole file when it is shorter), so that a file no loader takes is refused before it is read
 * whole. Throws a {@link LoaderError} whose message is one line saying what the file is and why it
 * cannot be loaded (a 64-bit ELF for another machine than x86-64, a bad Multiboot checksum, a 32-bit
 * ELF without a Multiboot header, a truncated or unknown file): the same line {@link loadKernel}
 * gives for the whole file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { probeKernel } from "./detect.ts";
 * import { HELLO64 } from "../guests/mod.ts";
 * assert.equal(probeKernel(HELLO64.subarray(0, 8192)), "multiboot");
 * assert.throws(() => probeKernel(new Uint8Array(8192)), /unknown format/);
 * ```
 */
export function probeKernel(head: Uint8Array): Exclude<KernelFormat, "unknown"> {
  const view = viewOf(head);
  const format = detectFormat(head);
  if (format === "elf64") {
    const machine = head.length >= ELF_MACHINE_OFFSET + 2 ? view.getUint16(ELF_MACHINE_OFFSET, true) : 0;
    if (machine !== EM_X86_64) {
      throw new LoaderError(
        "ELF64",
        `kernel: 64-bit ELF for machine ${machine}, not x86-64 (${EM_X86_64}), without a Multiboot header: ` +
          "not supported",
      );
    }
  }
  if (format !== "unknown") return format;
  const bad = findBadMultibootChecksum(head);
  if (bad !== undefined) {
    throw new LoaderError(
      "BAD_CHECKSUM",
      `kernel: Multiboot magic at offset ${hex(bad.offset)} but the checksum is wrong ` +
        `(magic + flags + checksum = ${hex(bad.sum)}, not 0)`,
    );
  }
  if (head.length < MIN_KERNEL_SIZE) {
    throw new LoaderError(
      "TRUNCATED",
      `kernel: the file is ${head.length} bytes, too short to be a kernel`,
    );
  }
  if (view.getUint32(0, true) === ELF_MAGIC && head[ELF_CLASS_OFFSET] === ELF_CLASS_32) {
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

/**
 * Loads a kernel image for `-kernel FILE`, by {@link detectFormat}: a Linux bzImage through
 * {@link loadBzImage}, a Multiboot image through {@link loadMultiboot}, a 64-bit ELF through
 * {@link loadPvh} when it is an x86-64 vmlinux with a PVH entry note, through {@link loadVmlinux}
 * (the 64-bit entry) when it is one without. Anything else throws a {@link LoaderError} whose
 * message is one line saying what the file is and why it cannot be loaded (see
 * {@link probeKernel}; also a Multiboot kernel with an initrd, and each loader's own refusals).
 *
 * `image` may be a source (an open file): then only the headers are read here, and the plan names
 * ranges of the kernel and the initrd instead of holding them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadKernel } from "./detect.ts";
 * import { EXIT_STATUS } from "../guests/mod.ts";
 * const plan = await loadKernel(EXIT_STATUS, { e820: [], ramSize: 0x800_0000n });
 * assert.equal(plan.cpu.rip, 0x100020n);
 * ```
 */
export async function loadKernel(image: Uint8Array | ImageSource, options: KernelOptions): Promise<BootPlan> {
  const source = imageSource(image);
  switch (probeKernel(readHead(source, KERNEL_PROBE_SIZE))) {
    case "multiboot": {
      if (options.initrd !== undefined) {
        throw new LoaderError(
          "INITRD_UNSUPPORTED",
          "kernel: Multiboot kernel with an initrd: Multiboot modules are not supported",
        );
      }
      const { cmdline, e820, ramSize } = options;
      return loadMultiboot(source, { ...(cmdline === undefined ? {} : { cmdline }), e820, ramSize });
    }
    // The Linux loaders are loaded only for a Linux kernel (a Multiboot guest's start needs none).
    case "bzimage":
      return (await import("./linux.ts")).loadBzImage(source, options);
    case "elf64": {
      // A vmlinux with Xen's PHYS32_ENTRY note is entered through PVH, as QEMU and Firecracker do.
      const { findPvhEntry, loadPvh } = await import("./pvh.ts");
      if (findPvhEntry(source) !== undefined) return loadPvh(source, options);
      return (await import("./vmlinux.ts")).loadVmlinux(source, options);
    }
  }
}
