/**
 * Image builders shared by the loader tests (not part of the public API): Multiboot headers,
 * ELF32/ELF64 files synthesized byte by byte, a PC-like e820 map.
 *
 * @module
 */

import type { BootWrite, E820Entry } from "./boot_plan.ts";
import { readSource } from "./image_source.ts";

/** A 128 MiB PC's e820 map, as SeaBIOS reports it under QEMU. */
export const PC_E820: readonly E820Entry[] = [
  { addr: 0n, size: 0x9_fc00n, type: 1 },
  { addr: 0x9_fc00n, size: 0x400n, type: 2 },
  { addr: 0xf_0000n, size: 0x1_0000n, type: 2 },
  { addr: 0x10_0000n, size: 0x7f0_0000n, type: 1 },
  { addr: 0xfffc_0000n, size: 0x4_0000n, type: 2 },
];
/** RAM size that goes with {@link PC_E820}. */
export const PC_RAM_SIZE = 0x800_0000n;

/** Little-endian u32 fields as bytes. */
export function u32s(...values: number[]): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setUint32(i * 4, v >>> 0, true));
  return bytes;
}

/** A Multiboot header: magic, flags, checksum, then the a.out-kludge fields if given. */
export function multibootHeader(
  flags: number,
  aout?: { headerAddr: number; loadAddr: number; loadEndAddr: number; bssEndAddr: number; entryAddr: number },
  checksumDelta = 0,
): Uint8Array {
  const base = [0x1bad_b002, flags, -(0x1bad_b002 + flags) + checksumDelta];
  if (aout === undefined) return u32s(...base);
  return u32s(...base, aout.headerAddr, aout.loadAddr, aout.loadEndAddr, aout.bssEndAddr, aout.entryAddr);
}

/** `size` bytes with `parts` copied in at their offsets. */
export function imageOf(size: number, parts: [number, Uint8Array][]): Uint8Array {
  const image = new Uint8Array(size);
  for (const [offset, bytes] of parts) image.set(bytes, offset);
  return image;
}

/** One program header of {@link elf32}. */
export interface TestSegment {
  /** p_type; default PT_LOAD (1). */
  type?: number;
  vaddr: number;
  paddr: number;
  data: Uint8Array;
  /** Default data.length. */
  memsz?: number;
  /** Default R+X (5). */
  flags?: number;
}

/** An ELF32 executable: header, program headers, then each segment's data (16-byte aligned). */
export function elf32(options: {
  entry: number;
  segments: TestSegment[];
  machine?: number;
  elfClass?: number;
  byteOrder?: number;
}): Uint8Array {
  const headerSize = 52;
  const phentsize = 32;
  let offset = headerSize + options.segments.length * phentsize;
  const placed = options.segments.map((segment) => {
    offset = (offset + 15) & ~15;
    const at = offset;
    offset += segment.data.length;
    return at;
  });
  const image = new Uint8Array(offset);
  const view = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, options.elfClass ?? 1, options.byteOrder ?? 1, 1]);
  view.setUint16(16, 2, true); // ET_EXEC
  view.setUint16(18, options.machine ?? 3, true);
  view.setUint32(20, 1, true);
  view.setUint32(24, options.entry, true);
  view.setUint32(28, headerSize, true); // e_phoff
  view.setUint16(40, headerSize, true); // e_ehsize
  view.setUint16(42, phentsize, true);
  view.setUint16(44, options.segments.length, true);
  options.segments.forEach((segment, i) => {
    const ph = headerSize + i * phentsize;
    view.setUint32(ph, segment.type ?? 1, true);
    view.setUint32(ph + 4, placed[i], true);
    view.setUint32(ph + 8, segment.vaddr, true);
    view.setUint32(ph + 12, segment.paddr, true);
    view.setUint32(ph + 16, segment.data.length, true);
    view.setUint32(ph + 20, segment.memsz ?? segment.data.length, true);
    view.setUint32(ph + 24, segment.flags ?? 5, true);
    view.setUint32(ph + 28, 0x1000, true);
    image.set(segment.data, placed[i]);
  });
  return image;
}

/** A minimal ELF64 header (64 bytes) for `machine`, followed by `rest`. */
export function elf64(machine: number, rest: Uint8Array = new Uint8Array(0)): Uint8Array {
  const image = new Uint8Array(64 + rest.length);
  const view = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  view.setUint16(16, 2, true);
  view.setUint16(18, machine, true);
  image.set(rest, 64);
  return image;
}

/** The bytes a plan writes at `addr` (the write must start exactly there), read if it is a range. */
export function writeAt(writes: readonly BootWrite[], addr: bigint): Uint8Array {
  const write = writes.find((w) => w.addr === addr);
  if (write === undefined) throw new Error(`no write at 0x${addr.toString(16)}`);
  return "data" in write ? write.data : readSource(write.source, write.offset, write.length);
}

/** `writes`, each of which must hold its bytes (the plan of an image given in memory). */
export function held(writes: readonly BootWrite[]): { addr: bigint; data: Uint8Array }[] {
  return writes.map((w) => {
    if (!("data" in w)) throw new Error(`the write at 0x${w.addr.toString(16)} is a source range`);
    return w;
  });
}

/** Fields of a synthetic bzImage ({@link bzImageOf}); defaults describe a small relocatable 2.15 kernel. */
export interface TestBzImage {
  /** Raw `setup_sects` byte (0 means 4). Default 4. */
  setupSects?: number;
  bootFlag?: number;
  magic?: number;
  version?: number;
  /** Second byte of the jump at 0x200: the header ends at 0x202 + this. Default 0x6a (0x26c). */
  jumpLength?: number;
  loadflags?: number;
  xloadflags?: number;
  relocatable?: number;
  kernelAlignment?: number;
  prefAddress?: bigint;
  initSize?: number;
  cmdlineSize?: number;
  initrdAddrMax?: number;
  payloadOffset?: number;
  payloadLength?: number;
  /** `syssize` in paragraphs; default: enough for `kernel`. */
  syssize?: number;
  /** The protected-mode kernel. Default 0x1000 bytes of a pattern. */
  kernel?: Uint8Array;
  /** A version string, placed in the setup code with `kernel_version` pointing at it. */
  kernelVersion?: string;
}

/** A bzImage built byte by byte: boot sector + setup sectors, then the protected-mode kernel. */
export function bzImageOf(options: TestBzImage = {}): Uint8Array {
  const kernel = options.kernel ?? Uint8Array.from({ length: 0x1000 }, (_, i) => (i * 7 + 1) & 0xff);
  const setupSects = options.setupSects ?? 4;
  const pmOffset = ((setupSects === 0 ? 4 : setupSects) + 1) * 512;
  const image = new Uint8Array(pmOffset + kernel.length);
  const view = new DataView(image.buffer);
  // Junk everywhere in the setup area, so a test sees exactly what the loader copies.
  for (let i = 0; i < pmOffset; i++) image[i] = 0xee;
  image[0x1f1] = setupSects;
  view.setUint16(0x1f2, 0, true); // root_flags
  view.setUint32(0x1f4, options.syssize ?? Math.ceil(kernel.length / 16), true);
  view.setUint16(0x1f8, 0, true); // ram_size
  view.setUint16(0x1fa, 0xfffd, true); // vid_mode: "ask", replaced by the loader
  view.setUint16(0x1fc, 0, true); // root_dev
  view.setUint16(0x1fe, options.bootFlag ?? 0xaa55, true);
  image[0x200] = 0xeb;
  image[0x201] = options.jumpLength ?? 0x6a;
  view.setUint32(0x202, options.magic ?? 0x5372_6448, true);
  view.setUint16(0x206, options.version ?? 0x020f, true);
  view.setUint32(0x208, 0, true); // realmode_swtch
  view.setUint16(0x20c, 0x1000, true); // start_sys_seg
  view.setUint16(0x20e, 0, true); // kernel_version
  image[0x210] = 0; // type_of_loader
  image[0x211] = options.loadflags ?? 0x01;
  view.setUint16(0x212, 0x8000, true); // setup_move_size
  view.setUint32(0x214, 0x10_0000, true); // code32_start
  view.setUint32(0x218, 0, true); // ramdisk_image
  view.setUint32(0x21c, 0, true); // ramdisk_size
  view.setUint32(0x220, 0, true); // bootsect_kludge
  view.setUint16(0x224, 0, true); // heap_end_ptr
  image[0x226] = 0; // ext_loader_ver
  image[0x227] = 0; // ext_loader_type
  view.setUint32(0x228, 0, true); // cmd_line_ptr
  view.setUint32(0x22c, options.initrdAddrMax ?? 0x7fff_ffff, true);
  view.setUint32(0x230, options.kernelAlignment ?? 0x20_0000, true);
  image[0x234] = options.relocatable ?? 1;
  image[0x235] = 21; // min_alignment
  view.setUint16(0x236, options.xloadflags ?? 0x7f, true);
  view.setUint32(0x238, options.cmdlineSize ?? 2047, true);
  view.setUint32(0x23c, 0, true); // hardware_subarch
  view.setBigUint64(0x240, 0n, true); // hardware_subarch_data
  view.setUint32(0x248, options.payloadOffset ?? 0x100, true);
  view.setUint32(0x24c, options.payloadLength ?? 0x200, true);
  view.setBigUint64(0x250, 0n, true); // setup_data
  view.setBigUint64(0x258, options.prefAddress ?? 0x100_0000n, true);
  view.setUint32(0x260, options.initSize ?? 0x40_0000, true);
  view.setUint32(0x264, 0x123, true); // handover_offset
  view.setUint32(0x268, 0x456, true); // kernel_info_offset
  if (options.kernelVersion !== undefined) {
    const at = 0x300;
    image.set(new TextEncoder().encode(options.kernelVersion + "\0"), at);
    view.setUint16(0x20e, at - 0x200, true);
  }
  image.set(kernel, pmOffset);
  return image;
}

/** One program header of {@link elf64Of}. */
export interface TestSegment64 {
  /** p_type; default PT_LOAD (1). */
  type?: number;
  vaddr: bigint;
  paddr: bigint;
  data: Uint8Array;
  /** Default data.length. */
  memsz?: bigint;
  /** Default R+X (5). */
  flags?: number;
}

/** ELF notes (4-byte aligned name and descriptor), e.g. for a PT_NOTE segment. */
export function elfNotes(notes: { owner: string; type: number; desc: Uint8Array }[]): Uint8Array {
  const align4 = (n: number) => (n + 3) & ~3;
  const parts = notes.map(({ owner, type, desc }) => {
    const name = new TextEncoder().encode(owner + "\0");
    const bytes = new Uint8Array(12 + align4(name.length) + align4(desc.length));
    const view = new DataView(bytes.buffer);
    view.setUint32(0, name.length, true);
    view.setUint32(4, desc.length, true);
    view.setUint32(8, type, true);
    bytes.set(name, 12);
    bytes.set(desc, 12 + align4(name.length));
    return bytes;
  });
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** An ELF64 executable: header, program headers, then each segment's data (16-byte aligned). */
export function elf64Of(options: {
  entry: bigint;
  segments: TestSegment64[];
  machine?: number;
  elfClass?: number;
  byteOrder?: number;
  type?: number;
  phentsize?: number;
}): Uint8Array {
  const headerSize = 64;
  const phentsize = 56;
  let offset = headerSize + options.segments.length * phentsize;
  const placed = options.segments.map((segment) => {
    offset = (offset + 15) & ~15;
    const at = offset;
    offset += segment.data.length;
    return at;
  });
  const image = new Uint8Array(offset);
  const view = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, options.elfClass ?? 2, options.byteOrder ?? 1, 1]);
  view.setUint16(16, options.type ?? 2, true); // ET_EXEC
  view.setUint16(18, options.machine ?? 62, true);
  view.setUint32(20, 1, true);
  view.setBigUint64(24, options.entry, true);
  view.setBigUint64(32, BigInt(headerSize), true); // e_phoff
  view.setUint16(52, headerSize, true); // e_ehsize
  view.setUint16(54, options.phentsize ?? phentsize, true);
  view.setUint16(56, options.segments.length, true);
  options.segments.forEach((segment, i) => {
    const ph = headerSize + i * phentsize;
    view.setUint32(ph, segment.type ?? 1, true);
    view.setUint32(ph + 4, segment.flags ?? 5, true);
    view.setBigUint64(ph + 8, BigInt(placed[i]), true);
    view.setBigUint64(ph + 16, segment.vaddr, true);
    view.setBigUint64(ph + 24, segment.paddr, true);
    view.setBigUint64(ph + 32, BigInt(segment.data.length), true);
    view.setBigUint64(ph + 40, segment.memsz ?? BigInt(segment.data.length), true);
    view.setBigUint64(ph + 48, 0x20_0000n, true);
    image.set(segment.data, placed[i]);
  });
  return image;
}

/** A LoaderError predicate for `assert.throws`: the code, the whole one-line message. */
export function loaderErrorLike(code: string, message: RegExp): (error: unknown) => true {
  return (error: unknown) => {
    if (!(error instanceof Error) || error.name !== "LoaderError") {
      throw new Error(`expected a LoaderError, got ${error}`);
    }
    const { code: actual } = error as Error & { code: string };
    if (actual !== code) throw new Error(`expected code ${code}, got ${actual}: ${error.message}`);
    if (!message.test(error.message)) {
      throw new Error(`message ${JSON.stringify(error.message)} !~ ${message}`);
    }
    if (error.message.includes("\n")) throw new Error("the message is more than one line");
    return true;
  };
}
