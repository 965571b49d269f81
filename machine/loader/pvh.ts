/**
 * The PVH entry of an ELF `vmlinux`: Xen's direct-boot protocol, which QEMU (`-kernel` of an ELF
 * with the note, `hw/i386/x86.c` and its pvh option ROM) and Firecracker also use for Linux. A
 * kernel built with CONFIG_PVH carries the ELF note `XEN_ELFNOTE_PHYS32_ENTRY` (type 18, owner
 * "Xen"), whose descriptor is the physical address of `pvh_start_xen`. The loader places the
 * PT_LOAD segments at their `p_paddr`, writes a `struct hvm_start_info` (Xen's
 * `arch/x86/include/public/hvm/start_info.h`, version 1) with the memory map, the command line, the
 * initrd as the one module and the RSDP address, and enters the note's address in 32-bit protected
 * mode, paging off, flat segments, EBX = the start info's address.
 *
 * | range              | what                                                   |
 * |--------------------|--------------------------------------------------------|
 * | 0x0500 - 0x051f    | boot GDT: CS 0x08 flat 32-bit code, DS/ES/SS 0x10 data |
 * | 0x10000 - 0x10037  | `hvm_start_info` (EBX at entry)                        |
 * | 0x10040 - 0x1005f  | `hvm_modlist_entry` of the initrd                      |
 * | 0x10080 - 0x10c7f  | `hvm_memmap_table_entry` × up to 128                   |
 * | 0x20000 - 0x20fff  | kernel command line                                    |
 * | above 1 MiB        | the kernel at its `p_paddr`; the initrd as high as it can below 2 GiB |
 *
 * The start info, module list and memory map take the page the 64-bit Linux entry uses for its zero
 * page, which PVH has no use for; the command line is where the 64-bit entry has it.
 *
 * @module
 */

import { toAddress } from "../../memory/mod.ts";
import { BOOT_RFLAGS, type BootPlan, E820_RAM } from "./boot_plan.ts";
import {
  BOOT_CODE32_SELECTOR,
  LINUX_CMDLINE_SIZE,
  LINUX_CMDLINE_START,
  LINUX_ZERO_PAGE_SIZE,
  LINUX_ZERO_PAGE_START,
} from "./layout.ts";
import { LoaderError } from "./loader_error.ts";
import { checkKernelFits, highestPlacement, type LinuxOptions, topOfLowRam } from "./_linux_boot.ts";
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
  viewOf,
} from "./_plan.ts";
import { type ImageSource, imageSource, readSource } from "./image_source.ts";
import {
  elf64Headers,
  parseVmlinux,
  segmentWrites,
  VMLINUX_CMDLINE_SIZE,
  VMLINUX_INITRD_ADDR_MAX,
} from "./vmlinux.ts";

/** `XEN_ELFNOTE_PHYS32_ENTRY` (xen/include/public/elfnote.h): the 32-bit physical entry. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** Owner name of Xen's ELF notes. */
export const XEN_NOTE_OWNER = "Xen";
/** `hvm_start_info.magic` ("xEn3" with the top bit set, start_info.h). */
export const HVM_START_MAGIC = 0x336e_c578;
/** The `hvm_start_info` version written: 1, the first with the memory map. */
export const HVM_START_VERSION = 1;
/** Size of `struct hvm_start_info` version 1. */
export const HVM_START_INFO_SIZE = 56;
/** Size of `struct hvm_modlist_entry`. */
export const HVM_MODLIST_ENTRY_SIZE = 32;
/** Size of `struct hvm_memmap_table_entry`. */
export const HVM_MEMMAP_ENTRY_SIZE = 24;
/** Where the start info goes (EBX at entry). */
export const PVH_START_INFO_START: bigint = LINUX_ZERO_PAGE_START;
/** Where the module list goes. */
export const PVH_MODLIST_START: bigint = LINUX_ZERO_PAGE_START + 0x40n;
/** Where the memory map goes. */
export const PVH_MEMMAP_START: bigint = LINUX_ZERO_PAGE_START + 0x80n;
/**
 * The most memory map entries: Linux copies them into its zero page's e820 table
 * (E820_MAX_ENTRIES_ZEROPAGE, arch/x86/platform/pvh/enlighten.c).
 */
export const PVH_MEMMAP_MAX_ENTRIES = 128;

const ELF64_PHDR_SIZE = 56;
const PT_NOTE = 4;
const NOTE_HEADER_SIZE = 12;
const FOUR_GIB = 0x1_0000_0000n;

/**
 * Options of {@link loadPvh}: those of the Linux loaders, whose `rsdpAddress` becomes `rsdp_paddr`
 * (0 or absent: the OS scans for the RSDP).
 */
export type PvhOptions = LinuxOptions;

const align4 = (n: number) => (n + 3) & ~3;

/**
 * The physical address in the vmlinux's `XEN_ELFNOTE_PHYS32_ENTRY` note, or undefined when it has
 * none (then the caller boots the 64-bit Linux entry instead). The descriptor may be 4 or 8 bytes
 * (Linux writes a pointer-sized value). Throws {@link LoaderError}: those of `parseVmlinux`
 * (not an x86-64 Linux ELF), and BAD_ELF for a note of another size or an address past 4 GiB.
 *
 * @example
 * ```ts ignore
 * const entry = findPvhEntry(Deno.readFileSync("vmlinux")); // e.g. 0x1000e00n, or undefined
 * ```
 */
export function findPvhEntry(image: Uint8Array | ImageSource): bigint | undefined {
  const source = imageSource(image);
  parseVmlinux(source); // the header, program headers and notes are sound past this point
  return pvhEntryOf(source);
}

/** {@link findPvhEntry} for an image `parseVmlinux` has already accepted. */
function pvhEntryOf(source: ImageSource): bigint | undefined {
  const { phentsize, phnum, table } = elf64Headers(source);
  for (let i = 0; i < phnum; i++) {
    const ph = i * phentsize;
    if (ph + ELF64_PHDR_SIZE > table.byteLength || table.getUint32(ph, true) !== PT_NOTE) continue;
    // The segment's notes, read alone (parseVmlinux checked they are inside the file).
    const notes = readSource(
      source,
      Number(table.getBigUint64(ph + 8, true)),
      Number(table.getBigUint64(ph + 32, true)),
    );
    const view = viewOf(notes);
    const end = notes.length;
    for (let at = 0; at + NOTE_HEADER_SIZE <= end;) {
      const namesz = view.getUint32(at, true);
      const descsz = view.getUint32(at + 4, true);
      const type = view.getUint32(at + 8, true);
      const name = at + NOTE_HEADER_SIZE;
      const desc = name + align4(namesz);
      if (desc + descsz > end) break; // a truncated note ends the segment's list
      const owner = new TextDecoder().decode(notes.subarray(name, name + namesz)).replace(/\0+$/, "");
      if (owner === XEN_NOTE_OWNER && type === XEN_ELFNOTE_PHYS32_ENTRY) {
        if (descsz !== 4 && descsz !== 8) {
          throw new LoaderError(
            "BAD_ELF",
            `pvh: the Xen PHYS32_ENTRY note has a ${descsz}-byte descriptor (4 or 8 expected)`,
          );
        }
        const entry = descsz === 4 ? BigInt(view.getUint32(desc, true)) : view.getBigUint64(desc, true);
        if (entry >= FOUR_GIB) {
          throw new LoaderError(
            "BAD_ELF",
            `pvh: the PHYS32_ENTRY note's address ${hex(entry)} is past 4 GiB`,
          );
        }
        return entry;
      }
      at = desc + align4(descsz);
    }
  }
  return undefined;
}

/**
 * Loads an x86-64 Linux vmlinux through its PVH entry: PT_LOAD segments at `p_paddr` (bss zeroed),
 * the boot GDT, `hvm_start_info` with the e820 map as `hvm_memmap_table_entry`s, the command line,
 * the initrd as module 0 (as high as possible below 2 GiB, outside the kernel), `rsdp_paddr`; entered
 * in protected32 mode at the note's address with EBX = {@link PVH_START_INFO_START}.
 *
 * @throws {LoaderError} NO_PVH_NOTE when the kernel has no `XEN_ELFNOTE_PHYS32_ENTRY` note (boot
 *   its 64-bit entry with `loadVmlinux` instead); BAD_ELF for an entry outside every loaded
 *   segment or a malformed note; DOES_NOT_FIT for a kernel or initrd not inside RAM; OVERLAP when
 *   the kernel covers the boot structures; BOOT_INFO_TOO_LARGE for a command line past 2047 bytes
 *   or more than 128 e820 entries; and those of `parseVmlinux`.
 * @throws {RangeError} for a malformed RAM size, e820 entry or RSDP address.
 *
 * @example
 * ```ts ignore
 * const plan = loadPvh(Deno.readFileSync("vmlinux"), { cmdline: "console=ttyS0", e820, ramSize });
 * // plan.cpu: protected32 at the note's address, rbx = 0x10000
 * ```
 */
export function loadPvh(image: Uint8Array | ImageSource, options: PvhOptions): BootPlan {
  const format = "pvh";
  const source = imageSource(image);
  const kernel = parseVmlinux(source);
  const entry = pvhEntryOf(source);
  if (entry === undefined) {
    throw new LoaderError(
      "NO_PVH_NOTE",
      `${format}: no Xen PHYS32_ENTRY ELF note (type ${XEN_ELFNOTE_PHYS32_ENTRY}): the kernel has no PVH entry`,
    );
  }
  const inLoaded = kernel.segments.some((s) => entry >= s.paddr && entry < s.paddr + BigInt(s.filesz));
  if (!inLoaded) {
    throw new LoaderError(
      "BAD_ELF",
      `${format}: the PVH entry ${hex(entry)} is outside every loaded segment of the image`,
    );
  }
  const ramSize = toAddress(options.ramSize, "RAM size");
  const rsdp = options.rsdpAddress === undefined ? 0n : toAddress(options.rsdpAddress, "RSDP address");
  const e820 = options.e820;
  if (e820.length > PVH_MEMMAP_MAX_ENTRIES) {
    throw new LoaderError(
      "BOOT_INFO_TOO_LARGE",
      `${format}: ${e820.length} e820 entries do not fit the memory map (at most ${PVH_MEMMAP_MAX_ENTRIES})`,
    );
  }
  for (const [i, e] of e820.entries()) {
    toAddress(e.addr, `e820 entry ${i} address`);
    toAddress(e.size, `e820 entry ${i} size`);
    if (!Number.isInteger(e.type) || e.type < 0 || e.type > 0xffff_ffff) {
      throw new RangeError(`e820 entry ${i}: type ${e.type} is not a 32-bit value`);
    }
  }
  const cmdline = options.cmdline ?? "";
  if (cmdline.includes("\0")) throw new RangeError(`${format}: the command line contains a NUL character`);
  const cmdlineText = new TextEncoder().encode(cmdline);
  if (cmdlineText.length > VMLINUX_CMDLINE_SIZE) {
    throw new LoaderError(
      "BOOT_INFO_TOO_LARGE",
      `${format}: the command line is ${cmdlineText.length} bytes; Linux takes at most ${VMLINUX_CMDLINE_SIZE}`,
    );
  }

  const size = kernel.end - kernel.start;
  const reserved = [{ start: kernel.start, size, what: "the kernel" }];
  checkKernelFits(reserved, format, options); // before allocating its bss
  const kernelWrites = segmentWrites(source, kernel);

  // The low structures: one page of start info, module list and memory map, and the command line.
  const cmdlineBytes = new Uint8Array(cmdlineText.length + 1);
  cmdlineBytes.set(cmdlineText);
  const low = [
    { start: LINUX_ZERO_PAGE_START, size: LINUX_ZERO_PAGE_SIZE, what: "the PVH start info page" },
    { start: LINUX_CMDLINE_START, size: LINUX_CMDLINE_SIZE, what: "the command line" },
  ];
  const gdt = bootGdtWrite();
  for (const area of [...low, { start: gdt.addr, size: BigInt(gdt.data.length), what: gdt.what }]) {
    checkInRam(area.start, area.size, area.what, format, ramSize, e820);
    if (area.start < kernel.end && kernel.start < area.start + area.size) {
      throw new LoaderError(
        "OVERLAP",
        `${format}: the kernel ${span(kernel.start, size)} overlaps ${area.what} ${
          span(area.start, area.size)
        }`,
      );
    }
  }

  let module: { addr: bigint; size: bigint } | undefined;
  const initrdWrites: LabelledWrite[] = [];
  const initrdSource = options.initrd === undefined ? undefined : imageSource(options.initrd);
  if (initrdSource !== undefined && initrdSource.size > 0) {
    const initrdSize = BigInt(initrdSource.size);
    const limit = [BigInt(VMLINUX_INITRD_ADDR_MAX) + 1n, topOfLowRam(e820), ramSize].reduce((
      a,
      b,
    ) => (a < b ? a : b));
    const regions = e820.length === 0
      ? [{ start: 0n, end: ramSize }]
      : e820.filter((e) => e.type === E820_RAM).map((e) => ({ start: e.addr, end: e.addr + e.size }));
    const addr = highestPlacement(initrdSize, limit, regions, [...reserved, ...low]);
    if (addr === undefined) {
      throw new LoaderError(
        "DOES_NOT_FIT",
        `${format}: the initrd (${hex(initrdSize)} bytes) does not fit in RAM below ${
          hex(limit)
        } outside the ` +
          `kernel ${span(kernel.start, size)}`,
      );
    }
    module = { addr, size: initrdSize };
    initrdWrites.push(sourceWrite(addr, initrdSource, 0, initrdSource.size, "the initrd"));
  }

  // struct hvm_start_info, the module list and the memory map, in one write (start_info.h).
  const page = new Uint8Array(
    Number(PVH_MEMMAP_START - PVH_START_INFO_START) + HVM_MEMMAP_ENTRY_SIZE * e820.length,
  );
  const view = new DataView(page.buffer);
  view.setUint32(0, HVM_START_MAGIC, true);
  view.setUint32(4, HVM_START_VERSION, true);
  view.setUint32(8, 0, true); // flags
  view.setUint32(12, module === undefined ? 0 : 1, true); // nr_modules
  view.setBigUint64(16, module === undefined ? 0n : PVH_MODLIST_START, true); // modlist_paddr
  view.setBigUint64(24, LINUX_CMDLINE_START, true); // cmdline_paddr
  view.setBigUint64(32, rsdp, true); // rsdp_paddr
  view.setBigUint64(40, e820.length === 0 ? 0n : PVH_MEMMAP_START, true); // memmap_paddr
  view.setUint32(48, e820.length, true); // memmap_entries
  if (module !== undefined) {
    const at = Number(PVH_MODLIST_START - PVH_START_INFO_START);
    view.setBigUint64(at, module.addr, true);
    view.setBigUint64(at + 8, module.size, true);
    // cmdline_paddr 0: the module has no command line; reserved 0.
  }
  e820.forEach((e, i) => {
    const at = Number(PVH_MEMMAP_START - PVH_START_INFO_START) + i * HVM_MEMMAP_ENTRY_SIZE;
    view.setBigUint64(at, e.addr, true);
    view.setBigUint64(at + 8, e.size, true);
    view.setUint32(at + 16, e.type, true);
  });

  const writes: LabelledWrite[] = [
    gdt,
    { addr: PVH_START_INFO_START, data: page, what: "the PVH start info" },
    { addr: LINUX_CMDLINE_START, data: cmdlineBytes, what: "the command line" },
    ...kernelWrites,
    ...initrdWrites,
  ];
  checkNoOverlap(writes, format);
  const moduleNote = module === undefined ? "" : `, initrd ${span(module.addr, module.size)}`;
  return {
    writes: planWrites(writes),
    cpu: {
      mode: "protected32",
      rip: entry,
      rflags: BOOT_RFLAGS,
      gpr: { rbx: PVH_START_INFO_START },
      cs: { selector: BOOT_CODE32_SELECTOR, base: 0n },
      gdt: bootGdtRegister(),
    },
    description:
      `Linux vmlinux via PVH (ELF64, ${kernel.segments.length} segment(s)): ${span(kernel.start, size)}, ` +
      `PVH entry ${hex(entry)}, start info at ${hex(PVH_START_INFO_START)}${moduleNote}`,
  };
}
