/**
 * The Linux bzImage loader, for the 64-bit boot protocol (Documentation/arch/x86/boot.rst,
 * protocol 2.12 and later): the setup header is checked, the protected-mode kernel placed, the zero
 * page built, and the vCPU entered in long mode at the kernel's `startup_64` (load address + 0x200).
 *
 * Where the kernel goes. A relocatable kernel (`relocatable_kernel` set: every distribution kernel)
 * is loaded at its runtime start, `align_up(max(pref_address, 0x100000), kernel_alignment)`, as
 * GRUB does: boot.rst's `init_size` algorithm says it decompresses there whatever address it is
 * loaded at (`startup_64` rounds the load address up and never goes below LOAD_PHYSICAL_ADDR =
 * `pref_address`), so loading it there makes its whole footprint one window,
 * `[runtime start, runtime start + init_size)`, and keeps the 0x100000-0xffffff range free. A
 * kernel that is not relocatable is loaded at 0x100000 (boot.rst's default `code32_start`, QEMU's
 * and Firecracker's address) and needs `[pref_address, pref_address + init_size)` besides, where it
 * moves itself. Either way that window must lie inside one RAM entry of the e820 map, below the
 * guest's RAM size and below 4 GiB (the boot identity map), or the image is refused.
 *
 * The boot structures (GDT, page tables, zero page, command line, stack) are at `layout.ts`'s
 * addresses; `_linux_boot.ts` builds them and places the initrd.
 *
 * @module
 */

import { alignUp } from "../../memory/mod.ts";
import type { BootPlan } from "./boot_plan.ts";
import { LINUX_KERNEL_START } from "./layout.ts";
import { LoaderError } from "./loader_error.ts";
import { LINUX_BOOT_FLAG, LINUX_HEADER_MAGIC, linuxBootPlan, type LinuxOptions, ZP } from "./_linux_boot.ts";
import { hex, sourceWrite, span, viewOf } from "./_plan.ts";
import { type ImageSource, imageSource, readHead, readSource } from "./image_source.ts";

export type { LinuxOptions } from "./_linux_boot.ts";

/** The oldest boot protocol with a 64-bit entry point (xloadflags appeared in 2.12). */
export const LINUX_MIN_PROTOCOL = 0x020c;
/** `xloadflags` bit 0: the kernel has the legacy 64-bit entry point at load address + 0x200. */
export const XLF_KERNEL_64_BIT = 1 << 0;
/** `xloadflags` bit 1: kernel, boot_params, command line and initrd may be above 4 GiB. */
export const XLF_CAN_BE_LOADED_ABOVE_4G_BIT = 1 << 1;
/** The 64-bit entry point is this far into the protected-mode kernel. */
export const LINUX_64BIT_ENTRY_OFFSET = 0x200n;
/** `setup_sects` of 0 means 4 (boot.rst: for compatibility with very old kernels). */
const DEFAULT_SETUP_SECTS = 4;
/** The setup code is counted in 512-byte sectors, after the boot sector. */
const SECTOR_SIZE = 512;
/** `syssize` counts 16-byte paragraphs. */
const PARAGRAPH_SIZE = 16;
/** The shortest file whose setup header has a signature and a version: through `version`. */
const MIN_HEADER_END = ZP.VERSION + 2;
/** Bytes read for the setup header: it ends by 0x202 + 255 (its length is a byte at 0x201). */
const HEADER_READ_SIZE = 0x400;
/** The longest kernel version string looked for, NUL excluded. */
const MAX_VERSION_LENGTH = 512;

/** The setup header of a bzImage, as far as a 64-bit loader needs it. */
export interface BzImageHeader {
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  protocol: number;
  /** 512-byte setup sectors after the boot sector (0 in the file already replaced by 4). */
  setupSects: number;
  /** File offset of the protected-mode kernel: `(setupSects + 1) * 512`. */
  protectedModeOffset: number;
  /** Size of the protected-mode kernel declared by `syssize` (bytes). */
  protectedModeSize: number;
  /** File offset where the setup header ends: `0x202 + byte[0x201]`. */
  headerEnd: number;
  /** `loadflags`. */
  loadflags: number;
  /** `xloadflags`. */
  xloadflags: number;
  /** `relocatable_kernel` is nonzero. */
  relocatable: boolean;
  /** `kernel_alignment`. */
  kernelAlignment: bigint;
  /** `pref_address`. */
  prefAddress: bigint;
  /** `init_size`: memory the kernel needs from its runtime start. */
  initSize: bigint;
  /** `cmdline_size`: the longest command line, NUL excluded. */
  cmdlineSize: number;
  /** `initrd_addr_max`: highest address the initrd may occupy. */
  initrdAddrMax: bigint;
  /** `payload_offset`: the compressed kernel's offset from the protected-mode kernel. */
  payloadOffset: number;
  /** `payload_length`. */
  payloadLength: number;
  /** The kernel's version string (`kernel_version`), if it has one. */
  kernelVersion?: string;
}

/** "2.15" for 0x020f. */
export function formatProtocol(protocol: number): string {
  return `${protocol >> 8}.${(protocol & 0xff).toString().padStart(2, "0")}`;
}

/** The NUL-terminated string at `offset`, or undefined if there is none within 512 bytes. */
function cStringAt(source: ImageSource, offset: number): string | undefined {
  if (offset <= 0 || offset >= source.size) return undefined;
  const bytes = readSource(source, offset, Math.min(MAX_VERSION_LENGTH + 1, source.size - offset));
  const end = bytes.indexOf(0);
  if (end < 0) return undefined;
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/**
 * Reads and checks the setup header of a bzImage (bytes, or a source of which only the header and
 * the version string are read) for the 64-bit entry; throws a
 * {@link LoaderError} whose message is one line for each refusal: TRUNCATED (the file ends before
 * the header or the protected-mode kernel it declares), BAD_MAGIC (no "HdrS" at 0x202, boot_flag
 * not 0xAA55), PROTOCOL_TOO_OLD (below 2.12), NO_64BIT_ENTRY (XLF_KERNEL_64 clear), BAD_HEADER
 * (a relocatable kernel whose kernel_alignment is not a power of two).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseBzImage } from "./linux.ts";
 * const image = new Uint8Array(0x1400);
 * const view = new DataView(image.buffer);
 * view.setUint16(0x1fe, 0xaa55, true);
 * image[0x201] = 0x6a;
 * view.setUint32(0x202, 0x53726448, true);
 * view.setUint16(0x206, 0x020f, true);
 * view.setUint32(0x1f4, 0x10, true); // syssize: 16 paragraphs
 * view.setUint16(0x236, 1, true); // XLF_KERNEL_64
 * const header = parseBzImage(image);
 * assert.equal(header.setupSects, 4);
 * assert.equal(header.protectedModeOffset, 0xa00);
 * ```
 */
export function parseBzImage(image: Uint8Array | ImageSource): BzImageHeader {
  const format = "bzImage";
  const source = imageSource(image);
  const fileSize = source.size;
  if (fileSize < MIN_HEADER_END) {
    throw new LoaderError(
      "TRUNCATED",
      `${format}: the file is ${fileSize} bytes, too short for a setup header (${hex(MIN_HEADER_END)})`,
    );
  }
  const head = readHead(source, HEADER_READ_SIZE);
  const view = viewOf(head);
  const magic = view.getUint32(ZP.HEADER, true);
  if (magic !== LINUX_HEADER_MAGIC) {
    throw new LoaderError(
      "BAD_MAGIC",
      `${format}: no "HdrS" signature at ${hex(ZP.HEADER)} (found ${hex(magic)}): not a Linux kernel image`,
    );
  }
  const bootFlag = view.getUint16(ZP.BOOT_FLAG, true);
  if (bootFlag !== LINUX_BOOT_FLAG) {
    throw new LoaderError(
      "BAD_MAGIC",
      `${format}: boot_flag at ${hex(ZP.BOOT_FLAG)} is ${hex(bootFlag)}, not ${hex(LINUX_BOOT_FLAG)}`,
    );
  }
  const protocol = view.getUint16(ZP.VERSION, true);
  if (protocol < LINUX_MIN_PROTOCOL) {
    throw new LoaderError(
      "PROTOCOL_TOO_OLD",
      `${format}: boot protocol ${formatProtocol(protocol)} is too old; the 64-bit entry needs ` +
        `${formatProtocol(LINUX_MIN_PROTOCOL)} or later`,
    );
  }
  const headerEnd = ZP.JUMP + 2 + head[ZP.JUMP + 1];
  const fieldsEnd = ZP.INIT_SIZE + 4; // the last field this loader reads
  const needed = headerEnd > fieldsEnd ? headerEnd : fieldsEnd;
  if (fileSize < needed) {
    throw new LoaderError(
      "TRUNCATED",
      `${format}: the setup header ends at ${hex(needed)}; the file is ${hex(fileSize)} bytes`,
    );
  }
  const xloadflags = view.getUint16(ZP.XLOADFLAGS, true);
  if ((xloadflags & XLF_KERNEL_64_BIT) === 0) {
    throw new LoaderError(
      "NO_64BIT_ENTRY",
      `${format}: no 64-bit entry point (xloadflags ${hex(xloadflags)} lacks XLF_KERNEL_64): a 32-bit kernel`,
    );
  }
  const setupSects = head[ZP.SETUP_HEADER] === 0 ? DEFAULT_SETUP_SECTS : head[ZP.SETUP_HEADER];
  const protectedModeOffset = (setupSects + 1) * SECTOR_SIZE;
  const protectedModeSize = view.getUint32(0x1f4, true) * PARAGRAPH_SIZE;
  if (protectedModeOffset >= fileSize || protectedModeOffset + protectedModeSize > fileSize) {
    throw new LoaderError(
      "TRUNCATED",
      `${format}: the protected-mode kernel ${
        span(BigInt(protectedModeOffset), BigInt(protectedModeSize))
      } ` +
        `(setup_sects ${setupSects}, syssize) passes the end of the file (${hex(fileSize)})`,
    );
  }
  const relocatable = head[ZP.RELOCATABLE_KERNEL] !== 0;
  const kernelAlignment = BigInt(view.getUint32(ZP.KERNEL_ALIGNMENT, true));
  if (relocatable && (kernelAlignment === 0n || (kernelAlignment & (kernelAlignment - 1n)) !== 0n)) {
    throw new LoaderError(
      "BAD_HEADER",
      `${format}: kernel_alignment ${hex(kernelAlignment)} of a relocatable kernel is not a power of two`,
    );
  }
  const versionOffset = view.getUint16(ZP.KERNEL_VERSION, true);
  const kernelVersion = versionOffset === 0 ? undefined : cStringAt(source, versionOffset + ZP.JUMP);
  return {
    protocol,
    setupSects,
    protectedModeOffset,
    protectedModeSize,
    headerEnd,
    loadflags: head[ZP.LOADFLAGS],
    xloadflags,
    relocatable,
    kernelAlignment,
    prefAddress: view.getBigUint64(ZP.PREF_ADDRESS, true),
    initSize: BigInt(view.getUint32(ZP.INIT_SIZE, true)),
    cmdlineSize: view.getUint32(ZP.CMDLINE_SIZE, true),
    initrdAddrMax: BigInt(view.getUint32(ZP.INITRD_ADDR_MAX, true)),
    payloadOffset: view.getUint32(ZP.PAYLOAD_OFFSET, true),
    payloadLength: view.getUint32(ZP.PAYLOAD_LENGTH, true),
    ...(kernelVersion === undefined ? {} : { kernelVersion }),
  };
}

/**
 * Loads a Linux bzImage (bytes, or a source whose plan names the kernel's range of it rather than
 * holding it) for the 64-bit entry: the protected-mode kernel at its runtime start
 * (relocatable kernels) or 0x100000, the zero page at 0x10000 with the image's setup header, the
 * board's e820 map and the loader fields, the command line at 0x20000, the initrd page-aligned as
 * high as possible below `initrd_addr_max`, the top of RAM below 4 GiB and `ramSize`, outside the
 * kernel's `init_size` window; then long mode at load address + 0x200 with RSI = 0x10000, RSP =
 * 0x8000, interrupts off, CS = 0x18 and data 0x10 of the boot GDT at 0x500, CR3 = 0xa000 (4 GiB
 * identity map). Throws {@link LoaderError} (see {@link parseBzImage}; DOES_NOT_FIT for a kernel
 * or initrd that does not fit, BOOT_INFO_TOO_LARGE for a command line longer than `cmdline_size`)
 * and `RangeError` for malformed options.
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * const plan = loadBzImage(Deno.readFileSync("/boot/vmlinuz"), {
 *   cmdline: "console=ttyS0",
 *   e820: [{ addr: 0n, size: 0x9fc00n, type: 1 }, { addr: 0x100000n, size: 0x7f00000n, type: 1 }],
 *   ramSize: 0x800_0000n,
 * });
 * assert.equal(plan.cpu.mode, "long64");
 * assert.equal(plan.cpu.gpr?.rsi, 0x10000n);
 * ```
 */
export function loadBzImage(image: Uint8Array | ImageSource, options: LinuxOptions): BootPlan {
  const source = imageSource(image);
  const header = parseBzImage(source);
  const kernelLength = source.size - header.protectedModeOffset;
  const size = BigInt(kernelLength);
  const initSize = header.initSize > size ? header.initSize : size;
  let load: bigint;
  const reserved = [];
  if (header.relocatable) {
    const lowest = header.prefAddress > LINUX_KERNEL_START ? header.prefAddress : LINUX_KERNEL_START;
    load = alignUp(lowest, header.kernelAlignment);
    reserved.push({
      start: load,
      size: initSize,
      what: `the kernel's memory (init_size ${hex(header.initSize)})`,
    });
  } else {
    load = LINUX_KERNEL_START;
    const runtime = header.prefAddress === 0n ? LINUX_KERNEL_START : header.prefAddress;
    if (runtime === load) {
      reserved.push({
        start: load,
        size: initSize,
        what: `the kernel's memory (init_size ${hex(header.initSize)})`,
      });
    } else {
      reserved.push({ start: load, size, what: "the kernel" });
      reserved.push({
        start: runtime,
        size: initSize,
        what: `the kernel's memory at pref_address (init_size ${hex(header.initSize)})`,
      });
    }
  }
  const entry = load + LINUX_64BIT_ENTRY_OFFSET;
  const version = header.kernelVersion === undefined ? "" : ` ${header.kernelVersion.split(" ")[0]}`;
  return linuxBootPlan({
    format: "bzImage",
    setupHeader: readSource(source, ZP.SETUP_HEADER, header.headerEnd - ZP.SETUP_HEADER),
    cmdlineSize: header.cmdlineSize,
    initrdAddrMax: header.initrdAddrMax,
    writes: [sourceWrite(load, source, header.protectedModeOffset, kernelLength, "the kernel")],
    reserved,
    entry,
    description: `Linux bzImage${version} (boot protocol ${formatProtocol(header.protocol)}): ` +
      `${hex(size)} bytes at ${hex(load)}, init_size ${hex(header.initSize)}, 64-bit entry ${hex(entry)}`,
  }, options);
}
