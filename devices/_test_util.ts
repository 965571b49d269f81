/**
 * Helpers shared by the device tests: a PC-style port-I/O space and short port accessors.
 *
 * @module
 */

import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";

/** A port-I/O root (`io`, unassigned ports read all-ones) and its address space "I/O". */
export function ioSpace(): { io: MemoryRegion; as: AddressSpace } {
  const io = MemoryRegion.io("io", 0x1_0000, UNASSIGNED_IO_OPS);
  return { io, as: new AddressSpace(io, "I/O") };
}

/** `in`/`out` of 1, 2 and 4 bytes on an address space, with numbers. */
export function portIo(as: AddressSpace) {
  return {
    inb: (port: number) => Number(as.read(port, 1).value),
    inw: (port: number) => Number(as.read(port, 2).value),
    inl: (port: number) => Number(as.read(port, 4).value),
    outb: (port: number, value: number) => void as.write(port, 1, value),
    outw: (port: number, value: number) => void as.write(port, 2, value),
    outl: (port: number, value: number) => void as.write(port, 4, value),
  };
}
