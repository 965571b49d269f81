/**
 * Helpers shared by the loaders (private to this folder): labelled writes, the overlap and RAM
 * checks, the boot GDT bytes, little-endian field access.
 *
 * @module
 */

import { rangesOverlap } from "../../memory/mod.ts";
import { type BootPlan, type BootWrite, E820_RAM, type E820Entry } from "./boot_plan.ts";
import { bootWriteLength, BytesSource, type ImageSource, readSource } from "./image_source.ts";
import { BOOT_GDT_DESCRIPTORS, BOOT_GDT_SIZE, BOOT_GDT_START } from "./layout.ts";
import { LoaderError } from "./loader_error.ts";

/** A write with a name for messages: bytes, or a range of an image source. */
export type LabelledWrite = BootWrite & {
  /** What it is, e.g. "the boot GDT" or "ELF segment 1". */
  readonly what: string;
};

/** A write of bytes the plan holds, with a name. */
export interface LabelledBytes {
  /** Guest-physical address of the first byte. */
  readonly addr: bigint;
  /** The bytes. */
  readonly data: Uint8Array;
  /** What it is. */
  readonly what: string;
}

/**
 * A write of `[offset, offset + length)` of `source`: a view of the bytes when the source is in
 * memory (so plans of in-memory images hold bytes, as they always did), else the range itself.
 */
export function sourceWrite(
  addr: bigint,
  source: ImageSource,
  offset: number,
  length: number,
  what: string,
): LabelledWrite {
  return source instanceof BytesSource
    ? { addr, data: readSource(source, offset, length), what }
    : { addr, source, offset, length, what };
}

/** `e_machine` of x86-64 (the ELF header of a vmlinux). */
export const EM_X86_64 = 62;

/** `0x` and lowercase hex digits. */
export function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}

/** `[start, end)` in hex. */
export function span(start: bigint, size: bigint): string {
  return `[${hex(start)}, ${hex(start + size)})`;
}

/** Throws OVERLAP when two writes share a byte, naming both. */
export function checkNoOverlap(writes: readonly LabelledWrite[], format: string): void {
  const size = (w: LabelledWrite) => BigInt(bootWriteLength(w));
  const sorted = writes.filter((w) => size(w) > 0n).toSorted((a, b) =>
    a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0
  );
  let last: LabelledWrite | undefined;
  for (const write of sorted) {
    if (last !== undefined) {
      const lastSize = size(last);
      if (rangesOverlap(last.addr, lastSize, write.addr, size(write))) {
        throw new LoaderError(
          "OVERLAP",
          `${format}: ${last.what} ${span(last.addr, lastSize)} overlaps ${write.what} ` +
            `${span(write.addr, size(write))}`,
        );
      }
    }
    if (last === undefined || write.addr + size(write) > last.addr + size(last)) {
      last = write;
    }
  }
}

/**
 * Throws DOES_NOT_FIT unless [start, start+size) lies below `ramSize` and, when `e820` has entries,
 * inside one RAM entry of it.
 */
export function checkInRam(
  start: bigint,
  size: bigint,
  what: string,
  format: string,
  ramSize: bigint | undefined,
  e820: readonly E820Entry[] = [],
): void {
  if (size === 0n) return;
  const end = start + size;
  if (ramSize !== undefined && end > ramSize) {
    throw new LoaderError(
      "DOES_NOT_FIT",
      `${format}: ${what} ${span(start, size)} ends beyond the guest's ${hex(ramSize)} bytes of RAM`,
    );
  }
  if (
    e820.length > 0 && !e820.some((e) => e.type === E820_RAM && e.addr <= start && end <= e.addr + e.size)
  ) {
    throw new LoaderError(
      "DOES_NOT_FIT",
      `${format}: ${what} ${span(start, size)} is not inside one RAM entry of the e820 map`,
    );
  }
}

/** The boot GDT's bytes (little-endian descriptors). */
export function bootGdtBytes(): Uint8Array {
  const bytes = new Uint8Array(Number(BOOT_GDT_SIZE));
  const view = new DataView(bytes.buffer);
  BOOT_GDT_DESCRIPTORS.forEach((descriptor, i) => view.setBigUint64(i * 8, descriptor, true));
  return bytes;
}

/** The boot GDT as a write. */
export function bootGdtWrite(): LabelledBytes {
  return { addr: BOOT_GDT_START, data: bootGdtBytes(), what: "the boot GDT" };
}

/** The `cpu.gdt` value for the boot GDT. */
export function bootGdtRegister(): NonNullable<BootPlan["cpu"]["gdt"]> {
  return { base: BOOT_GDT_START, limit: Number(BOOT_GDT_SIZE) - 1 };
}

/** Drops the labels. */
export function planWrites(writes: readonly LabelledWrite[]): BootPlan["writes"] {
  return writes.map((w) =>
    "data" in w
      ? { addr: w.addr, data: w.data }
      : { addr: w.addr, source: w.source, offset: w.offset, length: w.length }
  );
}

/** A little-endian view of `image`. */
export function viewOf(image: Uint8Array): DataView {
  return new DataView(image.buffer, image.byteOffset, image.byteLength);
}
