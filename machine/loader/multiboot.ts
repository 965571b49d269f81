/**
 * The Multiboot v1 loader, loading images the way `qemu-system-x86_64 -kernel` does
 * (`hw/i386/multiboot.c` and its option ROM `pc-bios/optionrom/multiboot.S`), checked against the
 * Multiboot Specification 0.6.96:
 *
 * - the header is the first 4-byte-aligned `0x1BADB002` in the first 8192 bytes whose
 *   `magic + flags + checksum` is 0 (mod 2^32);
 * - with flags bit 16 (the a.out kludge) the file from `offset - (header_addr - load_addr)` is
 *   loaded at `load_addr` up to `load_end_addr` (or the end of the file), zeroed up to
 *   `bss_end_addr`, and entered at `entry_addr`, with QEMU's consistency checks;
 * - otherwise the image must be an ELF32 for i386: each PT_LOAD segment is loaded at `p_paddr`,
 *   its bss zeroed, and `e_entry` is the entry (translated to physical through the executable
 *   segment containing it when `p_vaddr != p_paddr`, as QEMU's `load_elf`). An x86-64 ELF is
 *   refused, as QEMU refuses it;
 * - the kernel's pieces may lie anywhere below the RAM size (below 4 GiB), e820-reserved areas
 *   included, as QEMU loads them wherever guest memory exists: a stock `ld` puts the segment of the
 *   ELF headers one page below `.text`, in the BIOS area under 1 MiB. Unlike QEMU (where the guest
 *   then hangs), a piece beyond the RAM size is refused, and so is a piece over the information
 *   structures that this loader writes (QEMU's option ROM overwrites it);
 * - flags bit 2 (video mode) is accepted and ignored, as QEMU does (it only prints a note);
 *   unlike QEMU, other required bits (3-15) are refused as the specification demands;
 * - the information structure carries QEMU's flags (memory, boot device 0x8000ffff, command line,
 *   no modules, memory map, boot loader name "kvm-ts"); `mem_lower` / `mem_upper` and the memory
 *   map come from the board's e820 entries, computed as QEMU's option ROM does.
 *
 * The entry state is the specification's: 32-bit protected mode, flat CS (0x08) and data (0x10)
 * segments, paging and interrupts off, EAX = 0x2BADB002, EBX = the information structure. The
 * stack pointer is undefined (not set). Addresses are in `layout.ts`.
 *
 * @module
 */

import { type AddrInput, toAddress } from "../../memory/mod.ts";
import { BOOT_RFLAGS, type BootPlan, E820_RAM, type E820Entry } from "./boot_plan.ts";
import {
  BOOT_CODE32_SELECTOR,
  MULTIBOOT_CMDLINE_SIZE,
  MULTIBOOT_CMDLINE_START,
  MULTIBOOT_INFO_SIZE,
  MULTIBOOT_INFO_START,
  MULTIBOOT_LOADER_NAME_SIZE,
  MULTIBOOT_LOADER_NAME_START,
  MULTIBOOT_MMAP_SIZE,
  MULTIBOOT_MMAP_START,
} from "./layout.ts";
import { LoaderError } from "./loader_error.ts";
import {
  bootGdtRegister,
  bootGdtWrite,
  checkInRam,
  checkNoOverlap,
  hex,
  type LabelledBytes,
  type LabelledWrite,
  planWrites,
  sourceWrite,
  span,
  viewOf,
} from "./_plan.ts";
import {
  BytesSource,
  type ImageSource,
  imageSource,
  readHead,
  readSource,
  ZERO_SOURCE,
} from "./image_source.ts";

/** Magic of the Multiboot header in the image. */
export const MULTIBOOT_HEADER_MAGIC = 0x1bad_b002;
/** Value of EAX at entry, telling the kernel a Multiboot loader started it. */
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2bad_b002;
/** The header must lie in the first 8192 bytes of the image. */
export const MULTIBOOT_SEARCH_SIZE = 8192;
/** The header is 4-byte aligned. */
export const MULTIBOOT_HEADER_ALIGN = 4;
/** magic, flags, checksum. */
const HEADER_BASE_SIZE = 12;
/** ... plus header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr. */
const HEADER_AOUT_SIZE = 32;

/** Header flag: align modules on 4 KiB (no modules here, so always satisfied). */
export const MULTIBOOT_PAGE_ALIGN_BIT = 1 << 0;
/** Header flag: the kernel needs mem_* (always provided). */
export const MULTIBOOT_MEMORY_INFO_BIT = 1 << 1;
/** Header flag: the kernel asks for a video mode (ignored, as QEMU ignores it). */
export const MULTIBOOT_VIDEO_MODE_BIT = 1 << 2;
/** Header flag: the a.out kludge address fields are valid. */
export const MULTIBOOT_AOUT_KLUDGE_BIT = 1 << 16;
/** Required flags (bits 0-15) a loader must understand or refuse the image. */
const REQUIRED_FLAGS_MASK = 0xffff;
/** The required flags this loader understands. */
const KNOWN_REQUIRED_FLAGS = MULTIBOOT_PAGE_ALIGN_BIT | MULTIBOOT_MEMORY_INFO_BIT | MULTIBOOT_VIDEO_MODE_BIT;

/** Information flags, as QEMU sets them: memory, boot device, cmdline, modules, mmap, loader name. */
export const MULTIBOOT_INFO_FLAGS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9);
/** `boot_device`: BIOS drive 0x80, no partition (QEMU's value). */
export const MULTIBOOT_BOOT_DEVICE = 0x8000_ffff;
/** `boot_loader_name`. */
export const MULTIBOOT_LOADER_NAME = "kvm-ts";
/** Offsets in the information structure (Multiboot 0.6.96 §3.3). */
const INFO_FLAGS = 0;
const INFO_MEM_LOWER = 4;
const INFO_MEM_UPPER = 8;
const INFO_BOOT_DEVICE = 12;
const INFO_CMDLINE = 16;
const INFO_MODS_COUNT = 20;
const INFO_MODS_ADDR = 24;
const INFO_MMAP_LENGTH = 44;
const INFO_MMAP_ADDR = 48;
const INFO_BOOT_LOADER_NAME = 64;
/** One memory map entry: size (20, not counting itself), base_addr, length, type. */
const MMAP_ENTRY_SIZE = 24;
const MMAP_ENTRY_PAYLOAD = 20;

/** Lower memory ends at 640 KiB; upper memory starts at 1 MiB. */
const LOWER_MEMORY_END = 0xa_0000n;
const UPPER_MEMORY_START = 0x10_0000n;
/** mem_upper only counts memory below 4 GiB (the option ROM skips entries above). */
const FOUR_GIB = 0x1_0000_0000n;

/** ELF constants (System V ABI, i386 supplement). */
const ELF_MAGIC = 0x464c_457f; // "\x7fELF" little-endian
const ELF_CLASS_32 = 1;
const ELF_CLASS_64 = 2;
const ELF_DATA_LSB = 1;
const EM_386 = 3;
const EM_X86_64 = 62;
const ELF32_HEADER_SIZE = 52;
const ELF32_PHDR_SIZE = 32;
const PT_LOAD = 1;
const PF_X = 1;

/** A Multiboot header found in an image. */
export interface MultibootHeader {
  /** Offset of the magic in the file. */
  offset: number;
  /** The header's flags. */
  flags: number;
}

/** One piece of the kernel: file bytes at an address, then `bss` zero bytes. */
export interface MultibootSegment {
  /** Guest-physical address of the first byte. */
  addr: bigint;
  /** File offset of the bytes loaded. */
  offset: number;
  /** Bytes from the file. */
  filesz: number;
  /** Zero bytes following the file's. */
  bss: bigint;
}

/** A parsed Multiboot kernel: where its bytes go and where it starts. */
export interface MultibootKernel {
  /** The header that made it a Multiboot image. */
  header: MultibootHeader;
  /** How the load addresses were found. */
  kind: "aout-kludge" | "elf32";
  /** What to load, in file order. */
  segments: MultibootSegment[];
  /** Physical entry address. */
  entry: bigint;
}

/** What {@link loadMultiboot} needs from the board. */
export interface MultibootOptions {
  /** The kernel command line (QEMU passes "FILE ARGS"; the caller composes it). Default "". */
  cmdline?: string;
  /** The board's memory map: the Multiboot memory map, `mem_lower` and `mem_upper` come from it. */
  e820: readonly E820Entry[];
  /** Bytes of guest RAM: everything loaded must end below it. */
  ramSize: AddrInput;
}

function u32(view: DataView, offset: number): number {
  return view.getUint32(offset, true);
}

/**
 * The first valid Multiboot header of `image` (4-byte aligned, within the first 8192 bytes,
 * checksum right), or undefined.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { findMultibootHeader } from "./multiboot.ts";
 * const image = new Uint8Array(16);
 * new DataView(image.buffer).setUint32(4, 0x1badb002, true);
 * new DataView(image.buffer).setUint32(12, -0x1badb002 >>> 0, true);
 * assert.equal(findMultibootHeader(image)?.offset, 4);
 * ```
 */
export function findMultibootHeader(image: Uint8Array): MultibootHeader | undefined {
  const view = viewOf(image);
  const limit = Math.min(image.length, MULTIBOOT_SEARCH_SIZE);
  for (let offset = 0; offset + HEADER_BASE_SIZE <= limit; offset += MULTIBOOT_HEADER_ALIGN) {
    if (u32(view, offset) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = u32(view, offset + 4);
    if (((MULTIBOOT_HEADER_MAGIC + flags + u32(view, offset + 8)) >>> 0) === 0) return { offset, flags };
  }
  return undefined;
}

/**
 * Where the Multiboot magic appears with a wrong checksum (the first such offset), for
 * diagnostics; undefined if every magic in the search area has a valid header.
 */
export function findBadMultibootChecksum(image: Uint8Array): { offset: number; sum: number } | undefined {
  const view = viewOf(image);
  const limit = Math.min(image.length, MULTIBOOT_SEARCH_SIZE);
  for (let offset = 0; offset + HEADER_BASE_SIZE <= limit; offset += MULTIBOOT_HEADER_ALIGN) {
    if (u32(view, offset) !== MULTIBOOT_HEADER_MAGIC) continue;
    const sum = (MULTIBOOT_HEADER_MAGIC + u32(view, offset + 4) + u32(view, offset + 8)) >>> 0;
    if (sum !== 0) return { offset, sum };
  }
  return undefined;
}

function parseAoutKludge(source: ImageSource, head: Uint8Array, header: MultibootHeader): MultibootKernel {
  const size = source.size;
  const { offset } = header;
  if (offset + HEADER_AOUT_SIZE > MULTIBOOT_SEARCH_SIZE) {
    throw new LoaderError(
      "NO_MULTIBOOT_HEADER",
      `multiboot: the header at offset ${hex(offset)} does not end within the first 8192 bytes`,
    );
  }
  if (offset + HEADER_AOUT_SIZE > size) {
    throw new LoaderError(
      "TRUNCATED",
      `multiboot: the a.out-kludge header at offset ${hex(offset)} needs ${HEADER_AOUT_SIZE} bytes; ` +
        `the file ends at ${hex(size)}`,
    );
  }
  const view = viewOf(head); // the header ends within the first 8192 bytes, all in `head`
  const [headerAddr, loadAddr, loadEndAddr, bssEndAddr, entryAddr] = [12, 16, 20, 24, 28].map((field) =>
    u32(view, offset + field)
  );
  // The checks and their order are QEMU's (hw/i386/multiboot.c).
  if (headerAddr < loadAddr) {
    throw new LoaderError(
      "BAD_ADDRESS",
      `multiboot: header_addr ${hex(headerAddr)} is below load_addr ${hex(loadAddr)}`,
    );
  }
  if (headerAddr - loadAddr > offset) {
    throw new LoaderError(
      "BAD_ADDRESS",
      `multiboot: header_addr ${hex(headerAddr)} - load_addr ${hex(loadAddr)} is more than the header's ` +
        `file offset ${hex(offset)}`,
    );
  }
  const textOffset = offset - (headerAddr - loadAddr);
  let loadSize: number;
  if (loadEndAddr !== 0) {
    if (loadEndAddr < loadAddr) {
      throw new LoaderError(
        "BAD_ADDRESS",
        `multiboot: load_end_addr ${hex(loadEndAddr)} is below load_addr ${hex(loadAddr)}`,
      );
    }
    loadSize = loadEndAddr - loadAddr;
  } else {
    loadSize = size - textOffset;
  }
  if (loadAddr + loadSize > 0xffff_ffff) {
    throw new LoaderError(
      "DOES_NOT_FIT",
      `multiboot: ${hex(loadSize)} bytes at load_addr ${hex(loadAddr)} pass the 32-bit address space`,
    );
  }
  let kernelSize = loadSize;
  if (bssEndAddr !== 0) {
    if (bssEndAddr < loadAddr + loadSize) {
      throw new LoaderError(
        "BAD_ADDRESS",
        `multiboot: bss_end_addr ${hex(bssEndAddr)} is below load_end ${hex(loadAddr + loadSize)}`,
      );
    }
    kernelSize = bssEndAddr - loadAddr;
  }
  if (textOffset + loadSize > size) {
    throw new LoaderError(
      "TRUNCATED",
      `multiboot: load_end_addr ${hex(loadEndAddr)} asks for ${hex(loadSize)} bytes from file offset ` +
        `${hex(textOffset)}; the file has ${hex(size)}`,
    );
  }
  return {
    header,
    kind: "aout-kludge",
    segments: [{
      addr: BigInt(loadAddr),
      offset: textOffset,
      filesz: loadSize,
      bss: BigInt(kernelSize - loadSize),
    }],
    entry: BigInt(entryAddr),
  };
}

function parseElf32(source: ImageSource, header: MultibootHeader): MultibootKernel {
  const size = source.size;
  const image = readHead(source, ELF32_HEADER_SIZE); // the ELF header, or the whole of a shorter file
  const view = viewOf(image);
  const isElf = image.length >= 4 && u32(view, 0) === ELF_MAGIC;
  // QEMU looks at e_machine before anything else and names the problem.
  if (isElf && image.length >= 20 && view.getUint16(18, true) === EM_X86_64) {
    throw new LoaderError(
      "ELF64",
      'multiboot: cannot load an x86-64 ELF image without the a.out kludge (QEMU: "Cannot load x86-64 ' +
        'image, give a 32bit one."): link it as ELF32 or set header flags bit 16',
    );
  }
  if (!isElf) {
    throw new LoaderError(
      "BAD_ELF",
      "multiboot: the header does not set the a.out kludge (flags bit 16) and the image is not an ELF file",
    );
  }
  if (size < ELF32_HEADER_SIZE) {
    throw new LoaderError(
      "TRUNCATED",
      `multiboot: the ELF header needs ${ELF32_HEADER_SIZE} bytes; the file has ${size}`,
    );
  }
  const elfClass = image[4];
  if (elfClass === ELF_CLASS_64) {
    throw new LoaderError(
      "ELF64",
      "multiboot: 64-bit ELF images are not loadable: give a 32-bit (ELF32) one",
    );
  }
  if (elfClass !== ELF_CLASS_32) throw new LoaderError("BAD_ELF", `multiboot: unknown ELF class ${elfClass}`);
  if (image[5] !== ELF_DATA_LSB) {
    throw new LoaderError("BAD_ELF", `multiboot: ELF data encoding ${image[5]} is not little-endian (1)`);
  }
  const machine = view.getUint16(18, true);
  if (machine !== EM_386) {
    throw new LoaderError("BAD_ELF", `multiboot: ELF machine ${machine} is not i386 (${EM_386})`);
  }
  const entry = u32(view, 24);
  const phoff = u32(view, 28);
  const phentsize = view.getUint16(42, true);
  const phnum = view.getUint16(44, true);
  if (phnum > 0 && phentsize < ELF32_PHDR_SIZE) {
    throw new LoaderError(
      "BAD_ELF",
      `multiboot: ELF program header size ${phentsize} is below ${ELF32_PHDR_SIZE}`,
    );
  }
  if (phoff + phnum * phentsize > size) {
    throw new LoaderError(
      "TRUNCATED",
      `multiboot: the ELF program headers ${
        span(BigInt(phoff), BigInt(phnum * phentsize))
      } pass the end of ` +
        `the file (${hex(size)})`,
    );
  }
  const table = viewOf(readSource(source, phoff, phnum * phentsize));
  const segments: MultibootSegment[] = [];
  let physicalEntry = BigInt(entry);
  for (let i = 0; i < phnum; i++) {
    const ph = i * phentsize;
    if (u32(table, ph) !== PT_LOAD) continue;
    const [offset, vaddr, paddr, filesz, memsz, flags] = [4, 8, 12, 16, 20, 24].map((f) =>
      u32(table, ph + f)
    );
    if (memsz === 0) continue; // QEMU skips empty segments
    if (filesz > memsz) {
      throw new LoaderError(
        "BAD_ELF",
        `multiboot: ELF segment ${i} has p_filesz ${hex(filesz)} > p_memsz ${hex(memsz)}`,
      );
    }
    if (offset + filesz > size) {
      throw new LoaderError(
        "TRUNCATED",
        `multiboot: ELF segment ${i} needs file bytes ${
          span(BigInt(offset), BigInt(filesz))
        }; the file has ` +
          `${hex(size)}`,
      );
    }
    if (paddr + memsz > 0x1_0000_0000) {
      throw new LoaderError(
        "DOES_NOT_FIT",
        `multiboot: ELF segment ${i} ${span(BigInt(paddr), BigInt(memsz))} passes 4 GiB`,
      );
    }
    if ((flags & PF_X) !== 0 && vaddr !== paddr && entry >= vaddr && entry < vaddr + filesz) {
      physicalEntry = BigInt(entry - vaddr + paddr);
    }
    segments.push({ addr: BigInt(paddr), offset, filesz, bss: BigInt(memsz - filesz) });
  }
  if (segments.length === 0) {
    throw new LoaderError("BAD_ELF", "multiboot: the ELF file has no loadable segment");
  }
  return { header, kind: "elf32", segments, entry: physicalEntry };
}

/**
 * Finds the Multiboot header of `image` (bytes, or a source of which only the first 8192 bytes
 * and the ELF headers are read) and works out what to load where, without placing anything.
 * Throws {@link LoaderError}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseMultiboot } from "./multiboot.ts";
 * import { HELLO64 } from "../guests/mod.ts";
 * const kernel = parseMultiboot(HELLO64);
 * assert.equal(kernel.kind, "aout-kludge");
 * assert.equal(kernel.segments[0].addr, 0x100000n);
 * ```
 */
export function parseMultiboot(image: Uint8Array | ImageSource): MultibootKernel {
  const source = imageSource(image);
  const head = readHead(source, MULTIBOOT_SEARCH_SIZE);
  const header = findMultibootHeader(head);
  if (header === undefined) {
    const bad = findBadMultibootChecksum(head);
    if (bad !== undefined) {
      throw new LoaderError(
        "BAD_CHECKSUM",
        `multiboot: the header at offset ${hex(bad.offset)} has a bad checksum ` +
          `(magic + flags + checksum = ${hex(bad.sum)}, not 0)`,
      );
    }
    throw new LoaderError(
      "NO_MULTIBOOT_HEADER",
      `multiboot: no header (magic ${
        hex(MULTIBOOT_HEADER_MAGIC)
      }) in the first ${MULTIBOOT_SEARCH_SIZE} bytes`,
    );
  }
  const unknown = header.flags & REQUIRED_FLAGS_MASK & ~KNOWN_REQUIRED_FLAGS;
  if (unknown !== 0) {
    throw new LoaderError(
      "UNSUPPORTED_FLAGS",
      `multiboot: the header requires features this loader does not know (flags ${hex(unknown)} of ` +
        `${hex(header.flags)})`,
    );
  }
  return (header.flags & MULTIBOOT_AOUT_KLUDGE_BIT) !== 0
    ? parseAoutKludge(source, head, header)
    : parseElf32(source, header);
}

/** KiB of RAM at 0 (at most 640), from the e820 entry containing address 0. */
function memLower(e820: readonly E820Entry[]): number {
  const low = e820.find((e) => e.type === E820_RAM && e.addr === 0n);
  if (low === undefined) return 0;
  const end = low.size < LOWER_MEMORY_END ? low.size : LOWER_MEMORY_END;
  return Number(end >> 10n);
}

/**
 * KiB of RAM contiguous from 1 MiB, below 4 GiB: the option ROM's walk, which extends the end
 * through any RAM entry containing it and restarts because the map is unordered.
 */
function memUpper(e820: readonly E820Entry[]): number {
  let end = UPPER_MEMORY_START;
  for (let extended = true; extended;) {
    extended = false;
    for (const e of e820) {
      if (e.type !== E820_RAM || e.addr >= FOUR_GIB) continue;
      const entryEnd = e.addr + e.size < FOUR_GIB ? e.addr + e.size : FOUR_GIB;
      if (e.addr <= end && end < entryEnd) {
        end = entryEnd;
        extended = true;
      }
    }
  }
  return Number((end - UPPER_MEMORY_START) >> 10n);
}

function checkE820(e820: readonly E820Entry[]): void {
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

/** The Multiboot memory map bytes for `e820`. */
function memoryMap(e820: readonly E820Entry[]): Uint8Array {
  const bytes = new Uint8Array(e820.length * MMAP_ENTRY_SIZE);
  const view = new DataView(bytes.buffer);
  e820.forEach((e, i) => {
    const at = i * MMAP_ENTRY_SIZE;
    view.setUint32(at, MMAP_ENTRY_PAYLOAD, true);
    view.setBigUint64(at + 4, e.addr, true);
    view.setBigUint64(at + 12, e.size, true);
    view.setUint32(at + 20, e.type, true);
  });
  return bytes;
}

function cString(text: string, room: bigint, what: string): Uint8Array {
  if (text.includes("\0")) throw new RangeError(`multiboot: the ${what} contains a NUL character`);
  const encoded = new TextEncoder().encode(text);
  if (BigInt(encoded.length + 1) > room) {
    throw new LoaderError(
      "BOOT_INFO_TOO_LARGE",
      `multiboot: the ${what} is ${encoded.length} bytes; at most ${room - 1n} fit`,
    );
  }
  const bytes = new Uint8Array(encoded.length + 1);
  bytes.set(encoded);
  return bytes;
}

/**
 * Loads a Multiboot v1 kernel (bytes, or a source whose plan names ranges of it) as QEMU's
 * `-kernel` does: the kernel's bytes and bss, the boot GDT,
 * the information structure, memory map, command line and boot loader name in low memory
 * (`layout.ts`), entered in 32-bit protected mode with EAX = 0x2BADB002 and EBX = 0x9500.
 * Throws {@link LoaderError} for an image it cannot load, `RangeError` for malformed options.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadMultiboot } from "./multiboot.ts";
 * import { HELLO64 } from "../guests/mod.ts";
 * const plan = loadMultiboot(HELLO64, {
 *   cmdline: "hello64",
 *   e820: [{ addr: 0n, size: 0x9fc00n, type: 1 }, { addr: 0x100000n, size: 0x7f00000n, type: 1 }],
 *   ramSize: 0x8000000n,
 * });
 * assert.equal(plan.cpu.mode, "protected32");
 * assert.equal(plan.cpu.gpr?.rax, 0x2badb002n);
 * ```
 */
export function loadMultiboot(image: Uint8Array | ImageSource, options: MultibootOptions): BootPlan {
  const format = "multiboot";
  const source = imageSource(image);
  const ramSize = toAddress(options.ramSize, "RAM size");
  const e820 = options.e820;
  checkE820(e820);
  const kernel = parseMultiboot(source);

  if (BigInt(e820.length * MMAP_ENTRY_SIZE) > MULTIBOOT_MMAP_SIZE) {
    throw new LoaderError(
      "BOOT_INFO_TOO_LARGE",
      `multiboot: ${e820.length} e820 entries do not fit in the memory map area (at most ` +
        `${MULTIBOOT_MMAP_SIZE / BigInt(MMAP_ENTRY_SIZE)})`,
    );
  }
  const mmap = memoryMap(e820);
  const cmdline = cString(options.cmdline ?? "", MULTIBOOT_CMDLINE_SIZE, "command line");
  const loaderName = cString(MULTIBOOT_LOADER_NAME, MULTIBOOT_LOADER_NAME_SIZE, "boot loader name");

  const info = new Uint8Array(Number(MULTIBOOT_INFO_SIZE));
  const view = new DataView(info.buffer);
  view.setUint32(INFO_FLAGS, MULTIBOOT_INFO_FLAGS, true);
  view.setUint32(INFO_MEM_LOWER, memLower(e820), true);
  view.setUint32(INFO_MEM_UPPER, memUpper(e820), true);
  view.setUint32(INFO_BOOT_DEVICE, MULTIBOOT_BOOT_DEVICE, true);
  view.setUint32(INFO_CMDLINE, Number(MULTIBOOT_CMDLINE_START), true);
  view.setUint32(INFO_MODS_COUNT, 0, true);
  // No modules: point at the (empty) list right after the structure.
  view.setUint32(INFO_MODS_ADDR, Number(MULTIBOOT_INFO_START + MULTIBOOT_INFO_SIZE), true);
  view.setUint32(INFO_MMAP_LENGTH, mmap.length, true);
  view.setUint32(INFO_MMAP_ADDR, Number(MULTIBOOT_MMAP_START), true);
  view.setUint32(INFO_BOOT_LOADER_NAME, Number(MULTIBOOT_LOADER_NAME_START), true);

  const loaderWrites: LabelledBytes[] = [
    bootGdtWrite(),
    { addr: MULTIBOOT_MMAP_START, data: mmap, what: "the Multiboot memory map" },
    { addr: MULTIBOOT_INFO_START, data: info, what: "the Multiboot information structure" },
    { addr: MULTIBOOT_LOADER_NAME_START, data: loaderName, what: "the boot loader name" },
    { addr: MULTIBOOT_CMDLINE_START, data: cmdline, what: "the command line" },
  ];
  const kernelWrites: LabelledWrite[] = [];
  kernel.segments.forEach((segment, i) => {
    const what = kernel.kind === "elf32" ? `ELF segment ${i}` : "the kernel";
    // Only the RAM size bounds the kernel, not the e820 map's RAM entries: QEMU loads each piece
    // wherever guest memory exists, and a PC has memory (RAM, or the ROMs at 0xc0000-0xfffff) at
    // every address below its RAM size. A stock ld puts the headers' segment in the BIOS area.
    checkInRam(segment.addr, BigInt(segment.filesz) + segment.bss, what, format, ramSize);
    kernelWrites.push(sourceWrite(segment.addr, source, segment.offset, segment.filesz, what));
    if (segment.bss > 0n) {
      const addr = segment.addr + BigInt(segment.filesz);
      kernelWrites.push(
        source instanceof BytesSource
          ? { addr, data: new Uint8Array(Number(segment.bss)), what: `the bss of ${what}` }
          : sourceWrite(addr, ZERO_SOURCE, 0, Number(segment.bss), `the bss of ${what}`),
      );
    }
  });
  for (const write of loaderWrites) {
    checkInRam(write.addr, BigInt(write.data.length), write.what, format, ramSize, e820);
  }
  const writes = [...loaderWrites, ...kernelWrites];
  checkNoOverlap(writes, format);

  const first = kernel.segments.reduce((a, s) => (s.addr < a ? s.addr : a), kernel.segments[0].addr);
  const end = kernel.segments.reduce((a, s) => {
    const e = s.addr + BigInt(s.filesz) + s.bss;
    return e > a ? e : a;
  }, 0n);
  const notes = (kernel.header.flags & MULTIBOOT_VIDEO_MODE_BIT) !== 0
    ? "; video mode request ignored (as QEMU)"
    : "";
  const how = kernel.kind === "elf32" ? `ELF32, ${kernel.segments.length} segment(s)` : "a.out kludge";
  return {
    writes: planWrites(writes),
    cpu: {
      mode: "protected32",
      rip: kernel.entry,
      rflags: BOOT_RFLAGS,
      gpr: { rax: BigInt(MULTIBOOT_BOOTLOADER_MAGIC), rbx: MULTIBOOT_INFO_START },
      cs: { selector: BOOT_CODE32_SELECTOR, base: 0n },
      gdt: bootGdtRegister(),
    },
    description: `Multiboot kernel (${how}): ${span(first, end - first)}, entry ${hex(kernel.entry)}, ` +
      `information at ${hex(MULTIBOOT_INFO_START)}${notes}`,
  };
}
