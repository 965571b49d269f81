/**
 * What the two Linux loaders (bzImage and ELF vmlinux) share, private to this folder: the zero page
 * (`struct boot_params`, Documentation/arch/x86/zero-page.rst), the command line, the initrd's
 * placement, the low-memory boot structures and the 64-bit entry state of boot.rst's "64-bit Boot
 * Protocol". The loaders only say where the kernel's bytes go, which memory it needs, where it is
 * entered, and which setup header to start the zero page from.
 *
 * @module
 */

import { type AddrInput, alignDown, rangesOverlap, toAddress } from "../../memory/mod.ts";
import { BOOT_RFLAGS, type BootPlan, E820_RAM, type E820Entry } from "./boot_plan.ts";
import { identityPageTables } from "./flat.ts";
import {
  BOOT_CODE64_SELECTOR,
  BOOT_IDENTITY_MAP_END,
  BOOT_PML4_START,
  BOOT_STACK_START,
  BOOT_STACK_TOP,
  LINUX_CMDLINE_SIZE,
  LINUX_CMDLINE_START,
  LINUX_INITRD_LOWEST,
  LINUX_ZERO_PAGE_SIZE,
  LINUX_ZERO_PAGE_START,
} from "./layout.ts";
import { LoaderError } from "./loader_error.ts";
import {
  bootGdtRegister,
  bootGdtWrite,
  checkInRam,
  checkNoOverlap,
  hex,
  type LabelledWrite,
  planWrites,
  sourceWrite,
  span,
} from "./_plan.ts";
import { bootWriteLength, type ImageSource, imageSource } from "./image_source.ts";

/** What the Linux loaders need from the board. */
export interface LinuxOptions {
  /** The kernel command line. Default "". */
  cmdline?: string;
  /**
   * The initial ramdisk (initramfs), placed as high as the kernel allows below 4 GiB: bytes, or a
   * source (an open file) that the plan names a range of.
   */
  initrd?: Uint8Array | ImageSource;
  /** The board's memory map: copied into the zero page; everything is placed inside its RAM entries. */
  e820: readonly E820Entry[];
  /** Bytes of guest RAM below 4 GiB: everything loaded ends below it. */
  ramSize: AddrInput;
  /**
   * Guest-physical address of the ACPI RSDP: the zero page's `acpi_rsdp_addr` for a kernel of boot
   * protocol 2.14 or later, PVH's `rsdp_paddr`. Absent: the kernel scans the BIOS area for it.
   */
  rsdpAddress?: AddrInput;
}

/** The first boot protocol whose kernels read `acpi_rsdp_addr` from the zero page (boot.rst). */
export const ACPI_RSDP_MIN_PROTOCOL = 0x020e;

/** Offsets in the zero page (zero-page.rst, boot.rst "The Real-Mode Kernel Header"). */
export const ZP = {
  /** `acpi_rsdp_addr` (u64, protocol 2.14+): where the ACPI RSDP is. */
  ACPI_RSDP_ADDR: 0x070,
  /** `ext_ramdisk_image`: high 32 bits of the initrd address. */
  EXT_RAMDISK_IMAGE: 0x0c0,
  /** `ext_ramdisk_size`: high 32 bits of the initrd size. */
  EXT_RAMDISK_SIZE: 0x0c4,
  /** `ext_cmd_line_ptr`: high 32 bits of the command line address. */
  EXT_CMD_LINE_PTR: 0x0c8,
  /** `e820_entries` (u8). */
  E820_ENTRIES: 0x1e8,
  /** The setup header starts here (`setup_sects`). */
  SETUP_HEADER: 0x1f1,
  /** `vid_mode` (u16). */
  VID_MODE: 0x1fa,
  /** `boot_flag` (u16, 0xAA55). */
  BOOT_FLAG: 0x1fe,
  /** `jump` (2 bytes): the header ends at 0x202 + its second byte. */
  JUMP: 0x200,
  /** `header` ("HdrS"). */
  HEADER: 0x202,
  /** `version` (u16). */
  VERSION: 0x206,
  /** `kernel_version` (u16): version string offset less 0x200. */
  KERNEL_VERSION: 0x20e,
  /** `type_of_loader` (u8). */
  TYPE_OF_LOADER: 0x210,
  /** `loadflags` (u8). */
  LOADFLAGS: 0x211,
  /** `ramdisk_image` (u32). */
  RAMDISK_IMAGE: 0x218,
  /** `ramdisk_size` (u32). */
  RAMDISK_SIZE: 0x21c,
  /** `heap_end_ptr` (u16). */
  HEAP_END_PTR: 0x224,
  /** `cmd_line_ptr` (u32). */
  CMD_LINE_PTR: 0x228,
  /** `initrd_addr_max` (u32). */
  INITRD_ADDR_MAX: 0x22c,
  /** `kernel_alignment` (u32). */
  KERNEL_ALIGNMENT: 0x230,
  /** `relocatable_kernel` (u8). */
  RELOCATABLE_KERNEL: 0x234,
  /** `xloadflags` (u16). */
  XLOADFLAGS: 0x236,
  /** `cmdline_size` (u32). */
  CMDLINE_SIZE: 0x238,
  /** `payload_offset` (u32). */
  PAYLOAD_OFFSET: 0x248,
  /** `payload_length` (u32). */
  PAYLOAD_LENGTH: 0x24c,
  /** `pref_address` (u64). */
  PREF_ADDRESS: 0x258,
  /** `init_size` (u32). */
  INIT_SIZE: 0x260,
  /** `e820_table`: 20-byte entries. */
  E820_TABLE: 0x2d0,
  /** End of the space `struct setup_header` may use (`edd_mbr_sig_buffer` follows). */
  SETUP_HEADER_LIMIT: 0x290,
} as const;

/** `boot_flag`. */
export const LINUX_BOOT_FLAG = 0xaa55;
/** "HdrS", little-endian. */
export const LINUX_HEADER_MAGIC = 0x5372_6448;
/** `type_of_loader`: 0xFF, "undefined" (boot.rst: a loader without an assigned ID). */
export const LINUX_TYPE_OF_LOADER = 0xff;
/** `loadflags` bit 0: the protected-mode code is loaded at 0x100000 or above. */
export const LOADED_HIGH_BIT = 1 << 0;
/** `loadflags` bit 7: `heap_end_ptr` is valid. */
export const CAN_USE_HEAP_BIT = 1 << 7;
/** `heap_end_ptr`: the end of the setup heap relative to the real-mode code, as QEMU sets it. */
export const LINUX_HEAP_END_PTR = 0xfe00;
/** `vid_mode`: 0xFFFF, "normal" (no video mode change). */
export const LINUX_VID_MODE_NORMAL = 0xffff;
/** The zero page holds at most 128 e820 entries (E820_MAX_ENTRIES_ZEROPAGE). */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
/** Bytes per zero-page e820 entry: addr u64, size u64, type u32. */
const E820_ENTRY_SIZE = 20;
/** The initrd starts on a page boundary (boot.rst; QEMU and Firecracker align it so). */
const INITRD_ALIGN = 0x1000n;
/** 4 GiB: the initrd and the kernel stay below it (the 32-bit fields, the boot identity map). */
const FOUR_GIB = 0x1_0000_0000n;
const LOW32 = 0xffff_ffffn;

/** A range of guest memory the kernel needs, written or not (its `init_size` window, its bss). */
export interface Reservation {
  /** First byte. */
  start: bigint;
  /** Length in bytes. */
  size: bigint;
  /** For messages, e.g. "the kernel's memory (init_size 0x3f98000)". */
  what: string;
}

/** A kernel a Linux loader has parsed: what to place, what it needs, where to enter it. */
export interface LinuxKernel {
  /** Prefix of messages: "bzImage" or "vmlinux". */
  format: string;
  /** Zero-page bytes from offset 0x1F1 (the setup header, from the image or synthesised). */
  setupHeader: Uint8Array;
  /** Longest command line the kernel takes, NUL excluded (`cmdline_size`). */
  cmdlineSize: number;
  /** Highest address the initrd may occupy (`initrd_addr_max`, inclusive). */
  initrdAddrMax: bigint;
  /** The kernel's bytes at their guest-physical addresses. */
  writes: LabelledWrite[];
  /** Memory the kernel needs: covers `writes`; the initrd and boot structures stay out of it. */
  reserved: Reservation[];
  /** Guest-physical 64-bit entry point. */
  entry: bigint;
  /** For the plan's description: what was loaded where. */
  description: string;
}

function checkE820(e820: readonly E820Entry[], format: string): void {
  if (e820.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new LoaderError(
      "BOOT_INFO_TOO_LARGE",
      `${format}: ${e820.length} e820 entries do not fit in the zero page (at most ${E820_MAX_ENTRIES_ZEROPAGE})`,
    );
  }
  for (const [i, e] of e820.entries()) {
    toAddress(e.addr, `e820 entry ${i} address`);
    toAddress(e.size, `e820 entry ${i} size`);
    if (e.addr + e.size > 1n << 64n) {
      throw new RangeError(`e820 entry ${i}: ${span(e.addr, e.size)} passes 2^64`);
    }
    if (!Number.isInteger(e.type) || e.type < 0 || e.type > 0xffff_ffff) {
      throw new RangeError(`e820 entry ${i}: type ${e.type} is not a 32-bit value`);
    }
  }
}

/** The command line's bytes with its NUL, refusing what the kernel or our page cannot hold. */
function cmdlineBytes(cmdline: string, limit: number, format: string): Uint8Array {
  if (cmdline.includes("\0")) throw new RangeError(`${format}: the command line contains a NUL character`);
  const encoded = new TextEncoder().encode(cmdline);
  const room = Number(LINUX_CMDLINE_SIZE) - 1;
  if (encoded.length > limit || encoded.length > room) {
    const why = encoded.length > limit
      ? `this kernel takes at most ${limit} (cmdline_size)`
      : `at most ${room} fit`;
    throw new LoaderError(
      "BOOT_INFO_TOO_LARGE",
      `${format}: the command line is ${encoded.length} bytes; ${why}`,
    );
  }
  const bytes = new Uint8Array(encoded.length + 1);
  bytes.set(encoded);
  return bytes;
}

/** End (exclusive) of the highest RAM below 4 GiB in `e820`, or 4 GiB when the map is empty. */
export function topOfLowRam(e820: readonly E820Entry[]): bigint {
  if (e820.length === 0) return FOUR_GIB;
  let top = 0n;
  for (const e of e820) {
    if (e.type !== E820_RAM || e.addr >= FOUR_GIB) continue;
    const end = e.addr + e.size < FOUR_GIB ? e.addr + e.size : FOUR_GIB;
    if (end > top) top = end;
  }
  return top;
}

/**
 * The highest page-aligned address at which `size` bytes lie inside one of `regions` (each
 * `[start, end)`), end at or below `limit`, start at or above {@link LINUX_INITRD_LOWEST}, and
 * overlap none of `avoid`; undefined if there is none. The best end is either a region's (clipped)
 * end or the start of something to avoid, so only those are tried.
 */
export function highestPlacement(
  size: bigint,
  limit: bigint,
  regions: readonly { start: bigint; end: bigint }[],
  avoid: readonly Reservation[],
): bigint | undefined {
  let best: bigint | undefined;
  for (const region of regions) {
    const start = region.start > LINUX_INITRD_LOWEST ? region.start : LINUX_INITRD_LOWEST;
    const end = region.end < limit ? region.end : limit;
    if (end - start < size) continue;
    const tops = [end, ...avoid.map((a) => a.start).filter((s) => s > start && s < end)];
    for (const top of tops) {
      if (top - start < size) continue;
      const at = alignDown(top - size, INITRD_ALIGN);
      if (at < start || (best !== undefined && at <= best)) continue;
      if (avoid.some((a) => rangesOverlap(at, size, a.start, a.size))) continue;
      best = at;
    }
  }
  return best;
}

/** The zero page: the setup header copied in, then the loader's fields (boot.rst, zero-page.rst). */
function zeroPage(
  kernel: LinuxKernel,
  e820: readonly E820Entry[],
  initrd: { addr: bigint; size: bigint } | undefined,
  rsdp: bigint | undefined,
): Uint8Array {
  const page = new Uint8Array(Number(LINUX_ZERO_PAGE_SIZE));
  const view = new DataView(page.buffer);
  page.set(kernel.setupHeader.subarray(0, ZP.SETUP_HEADER_LIMIT - ZP.SETUP_HEADER), ZP.SETUP_HEADER);
  // An older kernel does not read the field; it scans 0xE0000-0xFFFFF for the RSDP instead.
  if (rsdp !== undefined && view.getUint16(ZP.VERSION, true) >= ACPI_RSDP_MIN_PROTOCOL) {
    view.setBigUint64(ZP.ACPI_RSDP_ADDR, rsdp, true);
  }
  view.setUint16(ZP.VID_MODE, LINUX_VID_MODE_NORMAL, true);
  page[ZP.TYPE_OF_LOADER] = LINUX_TYPE_OF_LOADER;
  page[ZP.LOADFLAGS] |= LOADED_HIGH_BIT | CAN_USE_HEAP_BIT;
  view.setUint16(ZP.HEAP_END_PTR, LINUX_HEAP_END_PTR, true);
  view.setUint32(ZP.CMD_LINE_PTR, Number(LINUX_CMDLINE_START & LOW32), true);
  view.setUint32(ZP.EXT_CMD_LINE_PTR, Number(LINUX_CMDLINE_START >> 32n), true);
  if (initrd !== undefined) {
    view.setUint32(ZP.RAMDISK_IMAGE, Number(initrd.addr & LOW32), true);
    view.setUint32(ZP.RAMDISK_SIZE, Number(initrd.size & LOW32), true);
    view.setUint32(ZP.EXT_RAMDISK_IMAGE, Number(initrd.addr >> 32n), true);
    view.setUint32(ZP.EXT_RAMDISK_SIZE, Number(initrd.size >> 32n), true);
  }
  page[ZP.E820_ENTRIES] = e820.length;
  e820.forEach((e, i) => {
    const at = ZP.E820_TABLE + i * E820_ENTRY_SIZE;
    view.setBigUint64(at, e.addr, true);
    view.setBigUint64(at + 8, e.size, true);
    view.setUint32(at + 16, e.type, true);
  });
  return page;
}

/**
 * Throws DOES_NOT_FIT unless each of `reserved` lies below 4 GiB (the boot identity map), below
 * `options.ramSize` and inside one RAM entry of `options.e820`.
 */
export function checkKernelFits(
  reserved: readonly Reservation[],
  format: string,
  options: LinuxOptions,
): void {
  const ramSize = toAddress(options.ramSize, "RAM size");
  for (const r of reserved) {
    if (r.start + r.size > BOOT_IDENTITY_MAP_END) {
      throw new LoaderError(
        "DOES_NOT_FIT",
        `${format}: ${r.what} ${span(r.start, r.size)} passes ${
          hex(BOOT_IDENTITY_MAP_END)
        } (the boot identity map)`,
      );
    }
    checkInRam(r.start, r.size, r.what, format, ramSize, options.e820);
  }
}

/**
 * The boot plan for a parsed Linux kernel: its bytes, the boot GDT, the 4 GiB identity map, the
 * zero page (with the RSDP's address for a 2.14+ kernel), the command line and the initrd; entered in long mode at `kernel.entry` with
 * RSI = the zero page, RSP = the boot stack, interrupts off (boot.rst, "64-bit Boot Protocol").
 */
export function linuxBootPlan(kernel: LinuxKernel, options: LinuxOptions): BootPlan {
  const { format } = kernel;
  const ramSize = toAddress(options.ramSize, "RAM size");
  const e820 = options.e820;
  checkE820(e820, format);
  const cmdline = cmdlineBytes(options.cmdline ?? "", kernel.cmdlineSize, format);
  const rsdp = options.rsdpAddress === undefined ? undefined : toAddress(options.rsdpAddress, "RSDP address");

  checkKernelFits(kernel.reserved, format, options);

  const loaderWrites: LabelledWrite[] = [
    bootGdtWrite(),
    ...identityPageTables().map((t) => ({ ...t, what: "the boot page tables" })),
    { addr: LINUX_CMDLINE_START, data: cmdline, what: "the command line" },
  ];
  const stack: Reservation = {
    start: BOOT_STACK_START,
    size: BOOT_STACK_TOP - BOOT_STACK_START,
    what: "the boot stack",
  };
  const lowAreas: Reservation[] = [
    ...loaderWrites.map((w) => ({ start: w.addr, size: BigInt(bootWriteLength(w)), what: w.what })),
    { start: LINUX_ZERO_PAGE_START, size: LINUX_ZERO_PAGE_SIZE, what: "the zero page" },
    stack,
  ];
  for (const area of lowAreas) checkInRam(area.start, area.size, area.what, format, ramSize, e820);
  for (const r of kernel.reserved) {
    const hit = lowAreas.find((a) => rangesOverlap(a.start, a.size, r.start, r.size));
    if (hit !== undefined) {
      throw new LoaderError(
        "OVERLAP",
        `${format}: ${r.what} ${span(r.start, r.size)} overlaps ${hit.what} ${span(hit.start, hit.size)}`,
      );
    }
  }

  let initrd: { addr: bigint; size: bigint } | undefined;
  const initrdWrites: LabelledWrite[] = [];
  const initrdSource = options.initrd === undefined ? undefined : imageSource(options.initrd);
  if (initrdSource !== undefined && initrdSource.size > 0) {
    const size = BigInt(initrdSource.size);
    const maxEnd = kernel.initrdAddrMax + 1n;
    const lowTop = topOfLowRam(e820);
    const limit = [maxEnd, lowTop, ramSize].reduce((a, b) => (a < b ? a : b));
    const regions = e820.length === 0
      ? [{ start: 0n, end: ramSize }]
      : e820.filter((e) => e.type === E820_RAM).map((e) => ({ start: e.addr, end: e.addr + e.size }));
    const addr = highestPlacement(size, limit, regions, [...kernel.reserved, ...lowAreas]);
    if (addr === undefined) {
      const kernelSpans = kernel.reserved.map((r) => span(r.start, r.size)).join(", ");
      throw new LoaderError(
        "DOES_NOT_FIT",
        `${format}: the initrd (${hex(size)} bytes) does not fit in RAM between ${
          hex(LINUX_INITRD_LOWEST)
        } and ` +
          `${hex(limit)} outside the kernel ${kernelSpans}`,
      );
    }
    initrd = { addr, size };
    initrdWrites.push(sourceWrite(addr, initrdSource, 0, initrdSource.size, "the initrd"));
  }

  const zeroPageWrite: LabelledWrite = {
    addr: LINUX_ZERO_PAGE_START,
    data: zeroPage(kernel, e820, initrd, rsdp),
    what: "the zero page",
  };
  const writes = [...loaderWrites, zeroPageWrite, ...kernel.writes, ...initrdWrites];
  checkNoOverlap([...writes, {
    addr: stack.start,
    data: new Uint8Array(Number(stack.size)),
    what: stack.what,
  }], format);

  const cmdlineNote = `command line ${cmdline.length - 1} bytes at ${hex(LINUX_CMDLINE_START)}`;
  const initrdNote = initrd === undefined ? "" : `, initrd ${span(initrd.addr, initrd.size)}`;
  return {
    writes: planWrites(writes),
    cpu: {
      mode: "long64",
      rip: kernel.entry,
      rsp: BOOT_STACK_TOP,
      rflags: BOOT_RFLAGS,
      gpr: { rsi: LINUX_ZERO_PAGE_START },
      cr3: BOOT_PML4_START,
      cs: { selector: BOOT_CODE64_SELECTOR, base: 0n },
      gdt: bootGdtRegister(),
    },
    description: `${kernel.description}; zero page at ${
      hex(LINUX_ZERO_PAGE_START)
    }, ${cmdlineNote}${initrdNote}`,
  };
}
