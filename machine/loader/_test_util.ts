/**
 * Image builders shared by the loader tests (not part of the public API): Multiboot headers,
 * ELF32/ELF64 files synthesized byte by byte, a PC-like e820 map.
 *
 * @module
 */

import type { E820Entry } from "./boot_plan.ts";

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

/** The bytes a plan writes at `addr` (the write must start exactly there). */
export function writeAt(writes: { addr: bigint; data: Uint8Array }[], addr: bigint): Uint8Array {
  const write = writes.find((w) => w.addr === addr);
  if (write === undefined) throw new Error(`no write at 0x${addr.toString(16)}`);
  return write.data;
}
