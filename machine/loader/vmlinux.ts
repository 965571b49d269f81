/**
 * The ELF `vmlinux` loader: an uncompressed x86-64 Linux kernel, booted the way Firecracker boots
 * it. Each PT_LOAD segment goes to its `p_paddr` (its bss zeroed), the zero page gets a synthesised
 * setup header (there is no real-mode part), and the vCPU enters `startup_64` in long mode with the
 * same state as a bzImage's 64-bit entry (`_linux_boot.ts`). This skips the decompressor, which is
 * what makes Linux reach its early printk on an emulating host (docs/kvm-abi.md §8).
 *
 * The entry point. Linux links vmlinux with `ENTRY(phys_startup_64)` (arch/x86/kernel/vmlinux.lds.S),
 * so `e_entry` is already the physical address of `startup_64` (0x1000000 for a default build),
 * while the segments' `p_vaddr` are in the kernel map at 0xffffffff80000000 + physical. So: an
 * `e_entry` inside some PT_LOAD's physical range `[p_paddr, p_paddr + p_filesz)` is taken as is;
 * otherwise one inside a PT_LOAD's virtual range `[p_vaddr, p_vaddr + p_filesz)` is translated to
 * `e_entry - p_vaddr + p_paddr` (what QEMU's ELF loader does for a virtual entry); anything else is
 * refused.
 *
 * What makes an ELF a Linux kernel: x86-64, ET_EXEC, and a PT_NOTE holding a note whose owner is
 * "Linux" (every kernel since 4.19 has one: init/version.c's build-salt note; Debian's 6.1 has two).
 *
 * @module
 */

import type { BootPlan } from "./boot_plan.ts";
import { LoaderError } from "./loader_error.ts";
import {
  checkKernelFits,
  LINUX_BOOT_FLAG,
  LINUX_HEADER_MAGIC,
  linuxBootPlan,
  type LinuxOptions,
  ZP,
} from "./_linux_boot.ts";
import { EM_X86_64, hex, type LabelledWrite, sourceWrite, span, viewOf } from "./_plan.ts";

export { EM_X86_64 };
import {
  BytesSource,
  type ImageSource,
  imageSource,
  readHead,
  readSource,
  ZERO_SOURCE,
} from "./image_source.ts";

/** ELF constants (System V gABI, x86-64 psABI). */
const ELF_MAGIC = 0x464c_457f; // "\x7fELF" little-endian
const ELF_CLASS_64 = 2;
const ELF_DATA_LSB = 1;
const ET_EXEC = 2;
const ELF64_HEADER_SIZE = 64;
const ELF64_PHDR_SIZE = 56;
const PT_LOAD = 1;
const PT_NOTE = 4;
/** Owner name of Linux's own ELF notes. */
const LINUX_NOTE_OWNER = "Linux";

/** The boot protocol version the synthesised header claims: 2.15, that of Linux 5.5 to 6.x. */
export const VMLINUX_PROTOCOL = 0x020f;
/** `kernel_alignment` of the synthesised header (Firecracker's: 16 MiB). */
export const VMLINUX_KERNEL_ALIGNMENT = 0x100_0000;
/** `cmdline_size` of the synthesised header: x86's COMMAND_LINE_SIZE (2048) less the NUL. */
export const VMLINUX_CMDLINE_SIZE = 2047;
/** `initrd_addr_max` of the synthesised header: what every x86-64 bzImage says (header.S). */
export const VMLINUX_INITRD_ADDR_MAX = 0x7fff_ffff;
/** Bytes of synthesised setup header, from 0x1F1 through `init_size` (protocol 2.15 ends at 0x26c). */
const SETUP_HEADER_LENGTH = 0x26c - ZP.SETUP_HEADER;

/** One PT_LOAD segment of a vmlinux. */
export interface VmlinuxSegment {
  /** Index in the program header table. */
  index: number;
  /** Guest-physical address (`p_paddr`). */
  paddr: bigint;
  /** `p_vaddr`. */
  vaddr: bigint;
  /** File offset of the segment's bytes (`p_offset`). */
  offset: number;
  /** Bytes from the file (`p_filesz`). */
  filesz: number;
  /** `p_memsz`: the file's bytes plus zeroed bss. */
  memsz: bigint;
}

/** A parsed vmlinux. */
export interface Vmlinux {
  /** Physical entry (`startup_64`). */
  entry: bigint;
  /** `e_entry` as in the file. */
  elfEntry: bigint;
  /** PT_LOAD segments with a nonzero `p_memsz`, in file order. */
  segments: VmlinuxSegment[];
  /** Lowest `p_paddr`. */
  start: bigint;
  /** Highest `p_paddr + p_memsz`. */
  end: bigint;
}

function bad(message: string): LoaderError {
  return new LoaderError("BAD_ELF", `vmlinux: ${message}`);
}

/** A file offset or size from a 64-bit field, refused when it cannot be inside any file. */
function fileNumber(value: bigint, size: number, what: string): number {
  if (value > BigInt(size)) {
    throw new LoaderError(
      "TRUNCATED",
      `vmlinux: ${what} ${hex(value)} passes the end of the file (${hex(size)})`,
    );
  }
  return Number(value);
}

/**
 * The ELF header and program header table of `source` (read from the file, nothing else), once
 * they are known to be inside it; TRUNCATED otherwise.
 */
export function elf64Headers(
  source: ImageSource,
): { header: DataView; phoff: number; phentsize: number; phnum: number; table: DataView } {
  const size = source.size;
  if (size < ELF64_HEADER_SIZE) {
    throw new LoaderError(
      "TRUNCATED",
      `vmlinux: the ELF header needs ${ELF64_HEADER_SIZE} bytes; the file has ${size}`,
    );
  }
  const header = viewOf(readSource(source, 0, ELF64_HEADER_SIZE));
  const phoff = fileNumber(header.getBigUint64(32, true), size, "e_phoff");
  const phentsize = header.getUint16(54, true);
  const phnum = header.getUint16(56, true);
  if (phoff + phnum * phentsize > size) {
    throw new LoaderError(
      "TRUNCATED",
      `vmlinux: the program headers ${span(BigInt(phoff), BigInt(phnum * phentsize))} pass the end of the ` +
        `file (${hex(size)})`,
    );
  }
  return { header, phoff, phentsize, phnum, table: viewOf(readSource(source, phoff, phnum * phentsize)) };
}

/** Whether the notes in `bytes` (a PT_NOTE's contents) include one owned by `owner`. */
function hasNoteOwner(bytes: Uint8Array, owner: string): boolean {
  const view = viewOf(bytes);
  const align4 = (n: number) => (n + 3) & ~3;
  for (let at = 0; at + 12 <= bytes.length;) {
    const namesz = view.getUint32(at, true);
    const descsz = view.getUint32(at + 4, true);
    const name = at + 12;
    if (name + namesz > bytes.length) return false;
    const text = new TextDecoder().decode(bytes.subarray(name, name + namesz)).replace(/\0+$/, "");
    if (text === owner) return true;
    at = name + align4(namesz) + align4(descsz);
  }
  return false;
}

/**
 * Parses an x86-64 Linux vmlinux (ELF64): its loadable segments and physical entry point, reading
 * only the ELF header, the program headers and the notes from `image` (bytes, or a source such
 * as an open file). Throws
 * {@link LoaderError}: TRUNCATED (header, program headers or a segment past the end of the file),
 * BAD_ELF (not a little-endian x86-64 ET_EXEC ELF64, malformed segments, an entry outside them),
 * NOT_LINUX (no "Linux" ELF note).
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * const kernel = parseVmlinux(Deno.readFileSync("vmlinux"));
 * assert.equal(kernel.entry, 0x1000000n);
 * ```
 */
export function parseVmlinux(image: Uint8Array | ImageSource): Vmlinux {
  const source = imageSource(image);
  const size = source.size;
  if (size < ELF64_HEADER_SIZE) {
    throw new LoaderError(
      "TRUNCATED",
      `vmlinux: the ELF header needs ${ELF64_HEADER_SIZE} bytes; the file has ${size}`,
    );
  }
  const ident = readHead(source, ELF64_HEADER_SIZE);
  const view = viewOf(ident);
  if (view.getUint32(0, true) !== ELF_MAGIC) throw bad("not an ELF file (no \\x7fELF magic)");
  if (ident[4] !== ELF_CLASS_64) throw bad(`ELF class ${ident[4]} is not 64-bit (${ELF_CLASS_64})`);
  if (ident[5] !== ELF_DATA_LSB) {
    throw bad(`ELF data encoding ${ident[5]} is not little-endian (${ELF_DATA_LSB})`);
  }
  const machine = view.getUint16(18, true);
  if (machine !== EM_X86_64) throw bad(`ELF machine ${machine} is not x86-64 (${EM_X86_64})`);
  const type = view.getUint16(16, true);
  if (type !== ET_EXEC) throw bad(`ELF type ${type} is not an executable (ET_EXEC, ${ET_EXEC})`);
  const elfEntry = view.getBigUint64(24, true);
  const phentsize = view.getUint16(54, true);
  const phnum = view.getUint16(56, true);
  fileNumber(view.getBigUint64(32, true), size, "e_phoff");
  if (phnum > 0 && phentsize < ELF64_PHDR_SIZE) {
    throw bad(`program header size ${phentsize} is below ${ELF64_PHDR_SIZE}`);
  }
  const { table } = elf64Headers(source);
  const segments: VmlinuxSegment[] = [];
  let linux = false;
  for (let i = 0; i < phnum; i++) {
    const ph = i * phentsize;
    const pType = table.getUint32(ph, true);
    if (pType !== PT_LOAD && pType !== PT_NOTE) continue;
    const offset = fileNumber(table.getBigUint64(ph + 8, true), size, `segment ${i} p_offset`);
    const vaddr = table.getBigUint64(ph + 16, true);
    const paddr = table.getBigUint64(ph + 24, true);
    const filesz = table.getBigUint64(ph + 32, true);
    const memsz = table.getBigUint64(ph + 40, true);
    if (BigInt(offset) + filesz > BigInt(size)) {
      throw new LoaderError(
        "TRUNCATED",
        `vmlinux: segment ${i} needs file bytes ${span(BigInt(offset), filesz)}; the file has ${hex(size)}`,
      );
    }
    if (pType === PT_NOTE) {
      // Notes are small: the only part of the file besides the headers read here.
      linux ||= hasNoteOwner(readSource(source, offset, Number(filesz)), LINUX_NOTE_OWNER);
      continue;
    }
    if (memsz === 0n) continue;
    if (filesz > memsz) throw bad(`segment ${i} has p_filesz ${hex(filesz)} > p_memsz ${hex(memsz)}`);
    if (paddr + memsz > 1n << 64n) throw bad(`segment ${i} ${span(paddr, memsz)} passes 2^64`);
    segments.push({ index: i, paddr, vaddr, offset, filesz: Number(filesz), memsz });
  }
  if (!linux) {
    throw new LoaderError(
      "NOT_LINUX",
      `vmlinux: no "${LINUX_NOTE_OWNER}" ELF note (PT_NOTE): this x86-64 ELF is not a Linux kernel`,
    );
  }
  if (segments.length === 0) throw bad("no loadable segment (PT_LOAD)");
  const inside = (addr: bigint, start: bigint, s: VmlinuxSegment) =>
    addr >= start && addr < start + BigInt(s.filesz);
  let entry: bigint | undefined;
  if (segments.some((s) => inside(elfEntry, s.paddr, s))) {
    entry = elfEntry;
  } else {
    const byVirtual = segments.find((s) => inside(elfEntry, s.vaddr, s));
    if (byVirtual !== undefined) entry = elfEntry - byVirtual.vaddr + byVirtual.paddr;
  }
  if (entry === undefined) {
    throw bad(`entry ${hex(elfEntry)} is in no loadable segment (neither a physical nor a virtual address)`);
  }
  const start = segments.reduce((a, s) => (s.paddr < a ? s.paddr : a), segments[0].paddr);
  const end = segments.reduce((a, s) => (s.paddr + s.memsz > a ? s.paddr + s.memsz : a), 0n);
  return { entry, elfEntry, segments, start, end };
}

/** The setup header a vmlinux lacks: boot_flag, "HdrS", version, alignment, limits (zero page 0x1F1-0x26B). */
function synthesisedSetupHeader(kernel: Vmlinux): Uint8Array {
  const bytes = new Uint8Array(SETUP_HEADER_LENGTH);
  const view = new DataView(bytes.buffer);
  const at = (offset: number) => offset - ZP.SETUP_HEADER;
  view.setUint16(at(ZP.BOOT_FLAG), LINUX_BOOT_FLAG, true);
  view.setUint32(at(ZP.HEADER), LINUX_HEADER_MAGIC, true);
  view.setUint16(at(ZP.VERSION), VMLINUX_PROTOCOL, true);
  view.setUint32(at(ZP.INITRD_ADDR_MAX), VMLINUX_INITRD_ADDR_MAX, true);
  view.setUint32(at(ZP.KERNEL_ALIGNMENT), VMLINUX_KERNEL_ALIGNMENT, true);
  view.setUint32(at(ZP.CMDLINE_SIZE), VMLINUX_CMDLINE_SIZE, true);
  // Informative only: the memory the kernel occupies from its first byte.
  view.setUint32(at(ZP.INIT_SIZE), Number((kernel.end - kernel.start) & 0xffff_ffffn), true);
  return bytes;
}

/**
 * Loads an x86-64 Linux vmlinux (ELF64) from bytes or a source (the plan then names ranges of
 * it rather than holding them): each PT_LOAD at `p_paddr` with its bss zeroed, the zero
 * page at 0x10000 with a synthesised setup header (boot_flag 0xAA55, "HdrS", version 2.15,
 * kernel_alignment 0x1000000, cmdline_size 2047, initrd_addr_max 0x7fffffff) plus the same loader
 * fields, e820 map, command line and initrd as {@link loadBzImage}, entered in long mode at the
 * physical `startup_64` with the same CPU state. The initrd stays out of `[lowest p_paddr, highest
 * p_paddr + p_memsz)`. Throws {@link LoaderError} (see {@link parseVmlinux}; DOES_NOT_FIT, OVERLAP,
 * BOOT_INFO_TOO_LARGE) and `RangeError` for malformed options.
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * const plan = loadVmlinux(Deno.readFileSync("vmlinux"), {
 *   cmdline: "console=ttyS0",
 *   e820: [{ addr: 0n, size: 0x9fc00n, type: 1 }, { addr: 0x100000n, size: 0xff00000n, type: 1 }],
 *   ramSize: 0x1000_0000n,
 * });
 * assert.equal(plan.cpu.rip, 0x1000000n);
 * ```
 */
export function loadVmlinux(image: Uint8Array | ImageSource, options: LinuxOptions): BootPlan {
  const source = imageSource(image);
  const kernel = parseVmlinux(source);
  const size = kernel.end - kernel.start;
  const reserved = [{ start: kernel.start, size, what: "the kernel" }];
  checkKernelFits(reserved, "vmlinux", options); // before allocating its bss
  return linuxBootPlan({
    format: "vmlinux",
    setupHeader: synthesisedSetupHeader(kernel),
    cmdlineSize: VMLINUX_CMDLINE_SIZE,
    initrdAddrMax: BigInt(VMLINUX_INITRD_ADDR_MAX),
    writes: segmentWrites(source, kernel),
    reserved,
    entry: kernel.entry,
    description:
      `Linux vmlinux (ELF64, ${kernel.segments.length} segment(s)): ${span(kernel.start, size)}, ` +
      `entry ${hex(kernel.entry)}`,
  }, options);
}

/**
 * The writes of a parsed vmlinux's PT_LOAD segments: each segment's file bytes (ranges of `source`)
 * at `p_paddr`, then its bss as zeros: an array for an image in memory (as before), a range of
 * {@link ZERO_SOURCE} for one read from a file, so that nothing of the kernel's size is allocated.
 */
export function segmentWrites(source: ImageSource, kernel: Vmlinux): LabelledWrite[] {
  const writes: LabelledWrite[] = [];
  for (const s of kernel.segments) {
    const what = `ELF segment ${s.index}`;
    writes.push(sourceWrite(s.paddr, source, s.offset, s.filesz, what));
    const bss = s.memsz - BigInt(s.filesz);
    if (bss > 0n) {
      const addr = s.paddr + BigInt(s.filesz);
      writes.push(
        source instanceof BytesSource
          ? { addr, data: new Uint8Array(Number(bss)), what: `the bss of ${what}` }
          : sourceWrite(addr, ZERO_SOURCE, 0, Number(bss), `the bss of ${what}`),
      );
    }
  }
  return writes;
}
